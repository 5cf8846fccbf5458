"""Maps the checkout's four folders into one installed package, `finops`.

frontend/ -> finops.frontend, workers/ -> finops.workers, shared/ -> finops.shared,
launcher/ -> finops.launcher (the `finops` command and the supervisor).
`finops` itself is a namespace package (PEP 420), so the checkout needs no fifth folder.
The data folders (the dashboard's files, the embedder's tokenizer) are listed as packages of
their own, so a wheel carries them. Everything else about the project lives in pyproject.toml.
"""
from setuptools import find_packages, setup

TOP = ("frontend", "workers", "shared", "launcher")
DATA = {"finops.frontend.ui": ["*"], "finops.workers.cache.assets": ["*"]}
packages = [f"finops.{p}" for p in find_packages(include=[f"{t}*" for t in TOP])] + list(DATA)
setup(packages=packages, package_dir={f"finops.{t}": t for t in TOP}, package_data=DATA)
