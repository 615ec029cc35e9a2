"""Developer tools of the kt-launch checkout (not shipped in the wheel): synthetic.py builds the tiny real
checkpoints the tests and `make demo` use."""
