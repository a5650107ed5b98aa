# The two commands of the README, with the set-up folded in:
#   make run    set up (first time), then evaluate every available method on the embedded
#               synthetic benchmark and write results/LEADERBOARD.md + plots
#   make test   set up (first time), then run the default test suite
PY := .venv/bin/python
# Files of published methods (research-only, never in the repository; see README): where a
# weights folder is given (WEIGHTS=/path) or ../shared/weights sits beside the checkout,
# `make run` also evaluates 3ddfa-v2 and mediapipe on them. Variables already set win.
WEIGHTS ?= $(wildcard ../shared/weights)
ifneq ($(WEIGHTS),)
export TDDFA_V2_ROOT ?= $(WEIGHTS)/3ddfa_v2
export MEDIAPIPE_FACE_LANDMARKER ?= $(WEIGHTS)/mediapipe/face_landmarker.task
endif
RUN_ARGS ?=
TEST_ARGS ?=

.PHONY: setup run test test-all leaderboard clean-cache

setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m benchmark run --methods all $(RUN_ARGS)

test: setup
	$(PY) -m pytest -q $(TEST_ARGS)

# Everything, including slow tests and tests on the research-only real photos when present.
test-all: setup
	$(PY) -m pytest -q -m "" $(TEST_ARGS)

leaderboard: setup
	$(PY) -m benchmark leaderboard

clean-cache:
	rm -rf .cache
