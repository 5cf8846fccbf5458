"""Maps the checkout's three folders into one installed package, `finops`.

frontend/ -> finops.frontend, workers/ -> finops.workers, shared/ -> finops.shared.
`finops` itself is a namespace package (PEP 420), so the checkout needs no fourth folder.
Everything else about the project lives in pyproject.toml.
"""
from setuptools import find_packages, setup

TOP = ("frontend", "workers", "shared")
packages = [f"finops.{p}" for p in find_packages(include=[f"{t}*" for t in TOP])]
setup(packages=packages, package_dir={f"finops.{t}": t for t in TOP},
      package_data={"finops.shared": ["*.toml"], "finops.workers.cache": ["assets/*"],
                                "finops.frontend": ["ui/*"]})
