"""Installs brianconv; copies the repository's models/ folder into the package as brianconv/_models."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODEL_FILES = ("architectures.py", "*.pt", "*.json", "README.md")


class BuildWithModels(build_py):
    """Ship the trained weights and their definitions with a regular (non-editable) install."""

    def run(self):
        super().run()
        source = Path(__file__).parent / "models"
        target = Path(self.build_lib) / "brianconv" / "_models"
        target.mkdir(parents=True, exist_ok=True)
        for pattern in MODEL_FILES:
            for path in source.glob(pattern):
                shutil.copy2(path, target / path.name)


setup(cmdclass={"build_py": BuildWithModels})
