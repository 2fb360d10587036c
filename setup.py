from setuptools import setup

setup(
    name="charlm",
    version="0.1.0",
    description="Character-level language models on MXNet Gluon: train, generate, eval",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # str.removeprefix needs 3.9; MXNet 1.9.1 imports distutils, which Python 3.12 removed. The tests need 3.10.
    python_requires=">=3.9,<3.12",
    packages=["charlm", "charlm.corpora"],
    package_data={"charlm.corpora": ["*.txt"], "charlm": ["assets/*.js", "assets/*.css"]},  # viz and web pages
    install_requires=[
        # MXNet 1.9.1 uses np.bool, which numpy 1.24 removed; Python 3.11's first numpy wheels are 1.23.2.
        "numpy>=1.20,<1.24",
        "click>=8.1",
        "tqdm>=4.60",
        "PyYAML>=6.0",
    ],
    extras_require={
        # The MXNet build is a choice: both install the `mxnet` module, so requiring one here would put it
        # back over the other on every reinstall. Without an extra, charlm uses whichever is installed.
        "cpu": ["mxnet==1.9.1"],
        "cu112": ["mxnet-cu112==1.9.1"],
        "plot": ["matplotlib>=3.5"],
        # `charlm export --format onnx` converts with MXNet 1.9.1's own exporter, which imports onnx.mapping:
        # onnx 1.19 removed it. 1.16.2 is the release the export is checked with (it has cp311 wheels).
        "onnx": ["onnx==1.16.2"],
        "tensorboard": ["tensorboardX>=2.5"],  # train --tensorboard DIR
        # sweeps with method bayes, early_terminate or --storage: Optuna's TPE, pruners and SQL studies (4.0: the
        # PED-ANOVA importances of `charlm plot`); a PostgreSQL or MySQL --storage also needs that server's driver
        "sweep": ["optuna>=4.0"],
        # matplotlib: the plot test runs too; wheel: the packaging test builds the wheel without isolation;
        # onnx and onnxruntime: the export tests run the ONNX model in a real runtime (opset 13, IR 7);
        # selenium: the viz and web pages are tested in Debian's chromium (which .ci/run installs);
        # optuna and psycopg2-binary: the study sweeps run, one of them on the PostgreSQL server CI starts
        "test": ["pytest>=7", "hypothesis>=6", "matplotlib>=3.5", "wheel", "onnx==1.16.2", "onnxruntime>=1.16",
                 "tensorboardX>=2.5", "selenium>=4.10", "optuna>=4.0", "psycopg2-binary>=2.9"],
    },
    entry_points={"console_scripts": ["charlm = charlm.cli:main"]},
)
