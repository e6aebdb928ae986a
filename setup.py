"""ament_python package: `colcon build` in a ROS 2 workspace, or `pip install .` in a venv."""
from pathlib import Path

from setuptools import find_packages, setup

package_name = "lift_localizer"
here = Path(__file__).parent


def share(folder: str) -> list:
    files = sorted(str(p) for p in (here / folder).glob("*") if p.is_file()) if (here / folder).is_dir() else []
    return [(f"share/{package_name}/{folder}", [str(Path(f).relative_to(here)) for f in files])] if files else []


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*"]),
    package_data={package_name: ["weights/*.safetensors", "weights/*.json", "backends/*.json", "training/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        *share("config"),
        *share("launch"),
    ],
    # ROS 2 convention: run-time dependencies are declared in package.xml (rosdep) and, for a venv,
    # in requirements.txt; listing them here would make entry points refuse to start where they
    # come from apt or JetPack instead of pip.
    install_requires=["setuptools"],
    zip_safe=False,
    python_requires=">=3.10",
    maintainer="lift_localizer developers",
    maintainer_email="lift-localizer@example.invalid",
    description="LIFT local features, NetVLAD retrieval and 6-DoF camera localization for ROS 2",
    license="BSD-3-Clause",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "lift-localizer = lift_localizer.cli:main",
            "lift_localizer_node = lift_localizer.ros.node:main",
        ],
    },
)
