# Two entry points: `make demo` and `make test`. Both create .venv on first use (idempotent), installing
# the exact versions of requirements.lock, the set CI tests.
#   make lock         re-resolve requirements.lock from the ranges in requirements.txt (tools/lock.py)
#   make test-latest  the tests in another venv (.venv-latest) with the newest versions the ranges allow
VENV ?= .venv
# What the venv installs: the lock by default; test-latest passes requirements.txt and --upgrade.
REQUIREMENTS ?= requirements.lock
PIP_FLAGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP_PIN := $(shell grep -m1 '^pip==' requirements.lock 2>/dev/null)

.PHONY: demo test test-latest lock clean-venv

# The interface package lift_localizer_msgs (msg/) is generated and installed into the venv itself
# (cmake + rosidl from the ROS wheels), so that it imports with no ROS environment at run time.
MSG_SRCS := $(wildcard msg/*.msg) msg/CMakeLists.txt msg/package.xml msg/build_into_venv.sh

$(STAMP): $(REQUIREMENTS) setup.py $(MSG_SRCS) Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(if $(PIP_FLAGS),--upgrade pip,"$(PIP_PIN)")
	$(PY) -m pip install --quiet $(PIP_FLAGS) -r $(REQUIREMENTS)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	# An editable install leaves out setup.py's data_files: link them into the venv prefix the way
	# `colcon build --symlink-install` would, so ament finds the package, its launch and config
	# files (share/lift_localizer) and `ros2 run`'s executable (lib/lift_localizer).
	mkdir -p $(VENV)/share/ament_index/resource_index/packages $(VENV)/share/lift_localizer $(VENV)/lib/lift_localizer
	ln -sfn $(CURDIR)/launch $(CURDIR)/config $(CURDIR)/package.xml $(VENV)/share/lift_localizer/
	ln -sf $(CURDIR)/resource/lift_localizer $(VENV)/share/ament_index/resource_index/packages/lift_localizer
	ln -sf ../../bin/lift_localizer_node $(VENV)/lib/lift_localizer/lift_localizer_node
	bash msg/build_into_venv.sh $(VENV) > $(VENV)/msg-build.log 2>&1 || { tail -n 80 $(VENV)/msg-build.log; echo "msg/build_into_venv.sh failed: full log in $(VENV)/msg-build.log" >&2; exit 1; }
	$(PY) -m pip list --format=freeze > $(VENV)/versions.txt 2>/dev/null
	touch $(STAMP)
	@echo "installed into $(VENV) (versions in $(VENV)/versions.txt); to use the commands: . $(VENV)/bin/activate, or run $(VENV)/bin/lift-localizer"

demo: $(STAMP)
	$(PY) -m lift_localizer demo $(DEMO_ARGS)

# Two workers: run alone, the suite keeps about one of two cores busy (it waits on nodes, child processes, DDS).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# Not in CI: drift in the newest allowed versions is found here before a user meets it. A fresh venv
# each time, so that it really gets today's newest releases.
test-latest:
	rm -rf .venv-latest
	$(MAKE) test VENV=.venv-latest REQUIREMENTS=requirements.txt PIP_FLAGS=--upgrade
	@echo "newest allowed versions tested: .venv-latest/versions.txt (compare with requirements.lock)"

lock:
	python3 tools/lock.py --requirements requirements.txt --output requirements.lock

clean-venv:
	rm -rf $(VENV) .venv-latest
