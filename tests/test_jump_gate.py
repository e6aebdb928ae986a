"""The jump gate: its decisions as pure logic, then the node's use of it with odom→camera handed in
(rclpy only: tf2_ros is not needed here; test_node.py drives it through real TF)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from lift_localizer.geometry.pose import invert, make_T, rodrigues
from lift_localizer.ros.jump_gate import JumpGate, JumpLimits, Verdict
from lift_localizer.ros.params import check

LIMITS = JumpLimits(max_jump_m=0.5, max_jump_deg=10.0, hold_timeout_s=5.0)
# Where odometry puts the camera, and where map→odom truly is.
T_ODOM_CAMERA = make_T(rodrigues([0.1, -0.3, 0.2]), [2.0, 1.0, 0.3])
A = make_T(rodrigues([0.0, 0.0, 0.4]), [10.0, -4.0, 0.0])


def moved(T_map_odom: np.ndarray, dt=(0.0, 0.0, 0.0), rotvec=(0.0, 0.0, 0.0),
          T_odom_camera: np.ndarray = T_ODOM_CAMERA) -> np.ndarray:
    """``T_map_odom`` changed so that the camera (at ``T_odom_camera``) moves by ``dt`` in the map
    and turns by ``rotvec`` about its own centre."""
    T_map_camera = T_map_odom @ T_odom_camera
    shifted = make_T(rodrigues(rotvec) @ T_map_camera[:3, :3], T_map_camera[:3, 3] + np.asarray(dt))
    return shifted @ invert(T_odom_camera)


def offer(gate: JumpGate, T_map_odom: np.ndarray, stamp: float, T_odom_camera: np.ndarray = T_ODOM_CAMERA,
          limits: JumpLimits = LIMITS):
    """What the node hands in: the localized pose and odom→camera, here made from a map→odom."""
    return gate.offer(T_map_odom @ T_odom_camera, T_odom_camera, stamp, limits)


B = moved(A, dt=(2.0, 0.0, 0.0))       # a 2 m jump of the camera
C = moved(A, dt=(0.0, -3.0, 1.0))      # another, elsewhere


def holding_B(t0: float = 0.0) -> JumpGate:
    """A gate that accepted A at ``t0`` and holds B since ``t0`` + 0.1 s."""
    gate = JumpGate()
    assert offer(gate, A, t0).verdict is Verdict.ACCEPT and offer(gate, B, t0 + 0.1).verdict is Verdict.HOLD
    return gate


def test_first_frame_is_accepted_and_small_drift_moves_the_reference():
    gate = JumpGate()
    first = offer(gate, A, 0.0)
    assert first.verdict is Verdict.ACCEPT and first.publish and "first fix" in first.reason
    # Each step is within the limits of the one before; the sum (1.6 m, 24°) is not within those of A.
    T = A
    for i in range(1, 5):
        T = moved(T, dt=(0.4, 0.0, 0.0), rotvec=(0.0, np.radians(6.0), 0.0))
        d = offer(gate, T, 0.1 * i)
        assert d.verdict is Verdict.ACCEPT and d.jump_m == pytest.approx(0.4) and d.jump_deg == pytest.approx(6.0)
    assert gate.counts == {"held": 0, "confirmed": 0, "rejected": 0, "expired": 0}


def test_a_jump_is_held_until_a_second_frame_agrees():
    gate = JumpGate()
    offer(gate, A, 0.0)
    held = offer(gate, B, 0.1)
    assert held.verdict is Verdict.HOLD and not held.publish
    assert held.jump_m == pytest.approx(2.0) and "held until a second frame agrees" in held.reason
    confirmed = offer(gate, moved(B, dt=(0.1, 0.05, 0.0), rotvec=(0.02, 0.0, 0.0)), 0.2)
    assert confirmed.verdict is Verdict.CONFIRM and confirmed.publish and "second frame agrees" in confirmed.reason
    assert gate.counts["held"] == 1 and gate.counts["confirmed"] == 1
    # The confirmed map→odom is the reference now: B is accepted, A is the jump.
    assert offer(gate, B, 0.3).verdict is Verdict.ACCEPT
    assert offer(gate, A, 0.4).verdict is Verdict.HOLD


def test_a_rotation_alone_is_a_jump():
    gate = JumpGate()
    offer(gate, A, 0.0)
    assert offer(gate, moved(A, rotvec=(0.0, 0.0, np.radians(9.0))), 0.1).verdict is Verdict.ACCEPT
    d = offer(gate, moved(A, rotvec=(0.0, 0.0, np.radians(25.0))), 0.2)
    assert d.verdict is Verdict.HOLD and d.jump_m == pytest.approx(0.0, abs=1e-9) and d.jump_deg == pytest.approx(16.0)


def test_a_frame_back_at_the_reference_drops_the_held_jump():
    gate = holding_B()
    back = offer(gate, moved(A, dt=(0.1, 0.0, 0.0)), 0.2)
    assert back.verdict is Verdict.ACCEPT and gate.counts["rejected"] == 1
    # The held B is gone: B again is a new jump, not its confirmation.
    assert offer(gate, B, 0.3).verdict is Verdict.HOLD
    assert gate.counts == {"held": 2, "confirmed": 0, "rejected": 1, "expired": 0}


def test_a_jump_elsewhere_replaces_the_held_one():
    gate = holding_B()
    assert offer(gate, C, 0.2).verdict is Verdict.HOLD          # agrees with neither A nor B
    assert offer(gate, B, 0.3).verdict is Verdict.HOLD          # B was dropped: C was held
    assert offer(gate, B, 0.4).verdict is Verdict.CONFIRM
    assert gate.counts == {"held": 3, "confirmed": 1, "rejected": 2, "expired": 0}


def test_a_held_jump_expires():
    gate = holding_B(100.0)
    # 6 s after it was held (timeout 5 s): B is a jump again, held anew ...
    assert offer(gate, B, 106.1).verdict is Verdict.HOLD and gate.counts["expired"] == 1
    # ... and a frame within the timeout of that one confirms it.
    assert offer(gate, B, 111.0).verdict is Verdict.CONFIRM
    # A stamp before the held one (a bag replayed from its start) is no confirmation either.
    offer(gate, A, 120.0)
    assert gate.counts["held"] == 3
    assert offer(gate, A, 50.0).verdict is Verdict.HOLD and gate.counts["expired"] == 2


def test_clear_takes_the_next_frame_on_its_own():
    gate = holding_B()
    gate.clear()
    after = offer(gate, C, 0.2)
    assert after.verdict is Verdict.ACCEPT and "first fix" in after.reason
    assert offer(gate, B, 0.3).verdict is Verdict.HOLD       # the reference is C now, B was forgotten
    assert gate.counts["held"] == 2, "counts are diagnostics: clear keeps them"


def test_a_jump_is_measured_where_the_camera_is():
    """Far from the odom origin, a small turn of map→odom about it moves the camera far, and a
    good fix that turns the camera slightly moves the odom origin far: only the camera counts."""
    far = make_T(np.eye(3), [50.0, 0.0, 0.0])   # the camera 50 m from where odometry started
    turned = make_T(rodrigues([0.0, 0.0, np.radians(5.0)]), [0.0, 0.0, 0.0])
    gate = JumpGate()
    offer(gate, A, 0.0, far)
    # map→odom turned 5° about the odom origin: the origin stays, the camera moves 4.4 m.
    d = offer(gate, A @ turned, 0.1, far)
    assert d.verdict is Verdict.HOLD and d.jump_m == pytest.approx(2 * 50 * np.sin(np.radians(2.5)))
    gate.clear()
    offer(gate, A, 0.2, far)
    # The camera turned 2° about itself: the odom origin moves 1.7 m, the camera not at all.
    assert offer(gate, moved(A, rotvec=(0.0, 0.0, np.radians(2.0)), T_odom_camera=far), 0.3, far).verdict \
        is Verdict.ACCEPT


def test_limits_are_positive_and_the_node_parameters_say_so():
    with pytest.raises(ValueError):
        JumpLimits(max_jump_m=0.0)
    assert "outside" in check("max_jump_m", 0.0) and "outside" in check("max_jump_deg", 200.0)
    assert "outside" in check("jump_hold_timeout_s", 0.0) and "true or false" in check("jump_gate", 1)
    assert check("max_jump_m", 0.5) is None and check("jump_gate", False) is None


# --- the node, with odom→camera handed in instead of looked up in TF ------------------------------

class FakeLocalizer:
    """Localizes every image at the pose the test sets."""

    def __init__(self) -> None:
        self.conf: dict = {}
        self.T_map_camera = np.eye(4)

    def extract(self, image, camera):
        return None

    def localize_features(self, features, camera, prior=None):
        from lift_localizer.localization.localizer import LocalizationResult

        return LocalizationResult(True, None, T_map_camera=self.T_map_camera.copy(), covariance=np.eye(6) * 1e-4)


class Published(list):
    def publish(self, msg) -> None:
        self.append(msg)


@pytest.fixture
def gated():
    """The node in this process with a fake localizer and odometry: (node, stamp s → T_odom_camera)."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-rclpy wheels) is not installed")
    from rclpy.parameter import Parameter
    from ros_harness import private_domain

    from lift_localizer.geometry.camera import Camera
    from lift_localizer.ros.node import LocalizerNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(private_domain(175)))
    n = LocalizerNode(context=context, parameter_overrides=[Parameter("warm_up", value=False)])
    try:
        # The worker's first look for a map (there is none) must be over before the fake goes in.
        deadline = time.monotonic() + 10
        while not n.stats.map_status.startswith("no map:") and time.monotonic() < deadline:
            time.sleep(0.01)
        n._localizer, n._camera = FakeLocalizer(), Camera(8, 6, np.array([[5.0, 0, 4], [0, 5.0, 3], [0, 0, 1]]))
        n.stats.set_map(True, "a fake map")
        n.pose_pub, n.diagnostics_pub = Published(), Published()
        odometry: dict[int, np.ndarray] = {}   # stamp (s) → T_odom_camera, what TF would know

        def lookup(odom_frame, camera_frame, stamp, wait_s):
            assert (odom_frame, camera_frame) == ("odom", "camera")
            if stamp.sec not in odometry:
                raise LookupError(f"no odom at {stamp.sec}")
            return odometry[stamp.sec]

        n.lookup_odom_camera = lookup
        yield n, odometry
    finally:
        n.destroy_node()
        context.try_shutdown()


def localize(gated, stamp: int, T_map_odom: np.ndarray, odom: bool = True) -> bool:
    """One frame through the node's worker: whether it published a pose."""
    from sensor_msgs.msg import Image

    from lift_localizer.bags.convert import make_image_fields

    node, odometry = gated
    node._localizer.T_map_camera = T_map_odom @ T_ODOM_CAMERA
    if odom:
        odometry[stamp] = T_ODOM_CAMERA
    msg = Image(**make_image_fields(np.zeros((6, 8), np.uint8), "mono8"))
    msg.header.stamp.sec, msg.header.frame_id = stamp, "camera"
    before = len(node.pose_pub)
    node._process(msg, False, time.monotonic(), node.gate.admit(time.monotonic(), 0.0))
    return len(node.pose_pub) > before


def diagnostics(gated) -> dict[str, str]:
    node, _ = gated
    node._publish_diagnostics()
    return {kv.key: kv.value for kv in node.diagnostics_pub[-1].status[0].values}


def test_node_holds_a_jump_until_a_second_frame_agrees(gated):
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger

    node, _ = gated
    assert localize(gated, 100, A)
    assert not localize(gated, 101, B), "a jump is not published"
    assert diagnostics(gated)["jump_held"] == "1" and diagnostics(gated)["frames_localized"] == "1"
    assert localize(gated, 102, B), "a second frame at B confirms it"
    values = diagnostics(gated)
    assert values["jump_confirmed"] == "1" and values["frames_localized"] == "2"
    pose = node.pose_pub[-1]
    assert pose.header.stamp.sec == 102 and pose.header.frame_id == "map"
    assert pose.pose.pose.position.x == pytest.approx((B @ T_ODOM_CAMERA)[0, 3])
    # Without odom→camera at the stamp the gate cannot judge: the frame passes as it did before.
    assert localize(gated, 103, C, odom=False)
    assert not localize(gated, 104, C)   # the gate's reference is still B

    # ~/relocalize: the next frame is taken on its own.
    response = node._on_relocalize(Trigger.Request(), Trigger.Response())
    assert response.success and "jump gate" in response.message
    assert localize(gated, 105, A)
    assert not localize(gated, 106, C)

    # Switched off: every frame passes; bad limits are refused.
    assert node.set_parameters([Parameter("jump_gate", value=False)])[0].successful
    assert localize(gated, 107, B) and localize(gated, 108, C)
    assert not node.set_parameters([Parameter("max_jump_m", value=0.0)])[0].successful
    # Switched on again, it starts afresh (its reference was A); 5 m then allows the 3.7 m from B to C.
    assert node.set_parameters([Parameter("jump_gate", value=True)])[0].successful
    assert localize(gated, 109, B)
    assert node.set_parameters([Parameter("max_jump_m", value=5.0)])[0].successful
    assert localize(gated, 110, C)
    assert diagnostics(gated)["jump_held"] == "3"
    assert "3 held as pose jumps" in node.diagnostics_pub[-1].status[0].message
