"""The lab beside ``sam_ros``: training and evaluating SAM 2 models on seeded synthetic videos
with exact masks and on labelled video, and the tests' reference models (README.md). It imports
``sam_ros``; ``sam_ros`` never imports it, and it is not installed onto a robot."""
