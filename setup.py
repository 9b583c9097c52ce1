"""Installs tfcascade as ONE import package, `tfcascade`: the repository's
`pipeline/` folder becomes `tfcascade.pipeline` (launcher) and `transforms/`
becomes `tfcascade.transforms` (workers). Nothing is installed as a top-level
`pipeline` or `transforms`, so a user's own `pipeline.py` cannot shadow ours.

As a library, tfcascade installs next to a user's own Beam and TensorFlow:
runtime dependencies are RANGES here (the lower bounds are the oldest versions
the tests passed with: apache-beam 2.65 + TensorFlow 2.18, numpy 2.0,
protobuf 5.29; the upper bounds stop before untested releases). The job's
launcher and workers run EXACTLY the tested versions: install with
`pip install -c constraints.txt .[...]` (CI, run_local.sh, the Dataflow image)
and ship the same pins to workers (docs/dataflow.md).

TensorFlow is `tensorflow` (CPU and GPU in one wheel); the `gpu` extra adds
NVIDIA's CUDA/cuDNN wheels (`tensorflow[and-cuda]`) for machines without a
system CUDA. See docs/install.md for sizes and the GPU check.
"""

import setuptools

# Import package -> repository folder (the folders keep the layout users asked
# for; the installed names live under one namespace).
PACKAGE_DIRS = {"tfcascade": "tfcascade", "tfcascade.pipeline": "pipeline",
                "tfcascade.transforms": "transforms"}
PACKAGES = ["tfcascade"] + [
    f"tfcascade.{name}" for name in setuptools.find_packages(
        include=["pipeline", "pipeline.*", "transforms", "transforms.*"])]

SCIKIT_LEARN = "scikit-learn==1.9.1"
MATPLOTLIB = "matplotlib==3.11.2"
TENSORFLOW = "tensorflow>=2.18,<2.22"

REQUIRES = [
    "apache-beam[gcp]>=2.65,<3",
    TENSORFLOW,
    "numpy>=2.0,<3",
    # C-accelerated CRC32C: checks both CRCs of every TFRecord record cheaply.
    "google-crc32c>=1.5,<2",
    "pydantic>=2.0,<3",
    "PyYAML>=6.0,<7",
]

setuptools.setup(
    name="tfcascade",
    version="0.1.0",
    description="Batch cascade inference of several TF1 checkpoints in one "
                "session, on Apache Beam.",
    python_requires=">=3.10,<3.13",
    packages=PACKAGES,
    package_dir=PACKAGE_DIRS,
    install_requires=REQUIRES,
    extras_require={
        # The demo's data set is scikit-learn's bundled 8x8 digits; its run
        # report (`tfcascade report`) draws with matplotlib.
        "demo": [SCIKIT_LEARN, MATPLOTLIB],
        # `tfcascade tune` draws tune.png and `tfcascade report` its charts (a
        # range: it installs next to a user's own matplotlib; constraints.txt
        # pins the tested one).
        "plot": ["matplotlib>=3.8,<4"],
        # NVIDIA's CUDA and cuDNN libraries as wheels (about 2.8 GB to
        # download, 4.4 GB installed), for `session.device: gpu` on a machine
        # without a system CUDA. docs/install.md.
        "gpu": [TENSORFLOW.replace("tensorflow", "tensorflow[and-cuda]", 1)],
        "test": [
            "pytest==9.2.0", "hypothesis==6.170.17", "psutil==7.2.2",
            # The demo tests build the demo: `.[test]` alone collects and
            # runs the whole suite.
            SCIKIT_LEARN,
            # The tune tests draw and read back tune.png.
            MATPLOTLIB,
            # The tests' independent second TFRecord reader (and the
            # tfrecord2idx cross-check). It cannot share a process with
            # TensorFlow (duplicate protobuf symbols), so it runs only in
            # TF-free subprocesses; the product never imports it.
            "tfrecord==1.14.6",
            # The Parquet output's readers (tests/test_parquet_output.py):
            # what analysts read it with, next to pyarrow (Beam's).
            "duckdb==2.0.1", "pandas==2.3.3",
        ],
        # The Spark engine (issue 11): the pyspark sdist ships Spark's jars
        # (bin/spark-class, jars/), so this is also what ci/spark/cluster.sh
        # starts a standalone master + workers from. Needs Java 17. Only
        # py4j comes with it (pinned in constraints.txt); pandas is not
        # pulled in (pyspark warns that pandas 3.x is not fully supported).
        "spark": ["pyspark==4.3.0"],
    },
    entry_points={"console_scripts": ["tfcascade=tfcascade.pipeline.cli:main"]},
)
