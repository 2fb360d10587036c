from setuptools import setup

setup(
    name="charlm",
    version="0.1.0",
    description="Character-level language models on MXNet Gluon: train, generate, eval",
    python_requires=">=3.8,<3.12",  # MXNet 1.9.1 imports distutils, which Python 3.12 removed
    packages=["charlm", "charlm.corpora"],
    package_data={"charlm.corpora": ["*.txt"]},
    install_requires=[
        "mxnet==1.9.1",
        "numpy==1.23.5",  # numpy >= 1.24 removed np.bool, which mxnet 1.9.1 uses
        "click>=8.1",
        "tqdm>=4.60",
        "PyYAML>=6.0",
    ],
    extras_require={
        "plot": ["matplotlib>=3.5"],
        "test": ["pytest>=7", "hypothesis>=6", "matplotlib>=3.5"],  # matplotlib: the plot test runs too
    },
    entry_points={"console_scripts": ["charlm = charlm.cli:main"]},
)
