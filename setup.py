"""Packaging detail pyproject.toml cannot say: the bundled profiles live in the repo's top-level configs/ (the
single copy in git) and ship inside the wheel as the package data dir kt_launch/profiles/."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["kt_launch*"]) + ["kt_launch.profiles"],
    package_dir={"kt_launch.profiles": "configs"},
    package_data={"kt_launch": ["data/*.json", "py.typed"], "kt_launch.profiles": ["*.yaml"]},
)
