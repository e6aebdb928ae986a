# Two entry points: `make demo` and `make test`. Both create .venv on first use (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test clean-venv

# The interface package lift_localizer_msgs (msg/) is generated and installed into the venv itself
# (cmake + rosidl from the ROS wheels), so that it imports with no ROS environment at run time.
MSG_SRCS := $(wildcard msg/*.msg) msg/CMakeLists.txt msg/package.xml msg/build_into_venv.sh

$(STAMP): requirements.txt setup.py $(MSG_SRCS) Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	# An editable install leaves out setup.py's data_files: link them into the venv prefix the way
	# `colcon build --symlink-install` would, so ament finds the package, its launch and config
	# files (share/lift_localizer) and `ros2 run`'s executable (lib/lift_localizer).
	mkdir -p $(VENV)/share/ament_index/resource_index/packages $(VENV)/share/lift_localizer $(VENV)/lib/lift_localizer
	ln -sfn $(CURDIR)/launch $(CURDIR)/config $(CURDIR)/package.xml $(VENV)/share/lift_localizer/
	ln -sf $(CURDIR)/resource/lift_localizer $(VENV)/share/ament_index/resource_index/packages/lift_localizer
	ln -sf ../../bin/lift_localizer_node $(VENV)/lib/lift_localizer/lift_localizer_node
	bash msg/build_into_venv.sh $(VENV) > $(VENV)/msg-build.log 2>&1 || { tail -n 80 $(VENV)/msg-build.log; echo "msg/build_into_venv.sh failed: full log in $(VENV)/msg-build.log" >&2; exit 1; }
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m lift_localizer demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
