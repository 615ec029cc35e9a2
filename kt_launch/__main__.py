from kt_launch.cli import run

run()
