"""Installs tfcascade: `pipeline` (launcher) and `transforms` (workers).

Also the file Dataflow/Flink workers get through `--setup_file`, so every
runtime dependency is pinned here: Beam needs the same versions on the
launcher and the workers.
"""

import setuptools

SCIKIT_LEARN = "scikit-learn==1.9.1"

REQUIRES = [
    "apache-beam[gcp]==2.77.0",
    "tensorflow-cpu==2.21.0",
    "numpy==2.4.6",
    "protobuf==6.33.6",
    # C-accelerated CRC32C: checks both CRCs of every TFRecord record cheaply.
    "google-crc32c==1.9.0",
    "pydantic==2.13.4",
    "PyYAML==6.0.3",
]

setuptools.setup(
    name="tfcascade",
    version="0.1.0",
    description="Batch cascade inference of several TF1 checkpoints in one "
                "session, on Apache Beam.",
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(include=["pipeline", "pipeline.*",
                                               "transforms", "transforms.*"]),
    install_requires=REQUIRES,
    extras_require={
        # The demo's data set is scikit-learn's bundled 8x8 digits.
        "demo": [SCIKIT_LEARN],
        "test": [
            "pytest==9.2.0", "hypothesis==6.170.17", "psutil==7.2.2",
            # The demo tests build the demo: `.[test]` alone collects and
            # runs the whole suite.
            SCIKIT_LEARN,
            # The tests' independent second TFRecord reader (and the
            # tfrecord2idx cross-check). It cannot share a process with
            # TensorFlow (duplicate protobuf symbols), so it runs only in
            # TF-free subprocesses; the product never imports it.
            "tfrecord==1.14.6",
        ],
        # The Spark engine (issue 11): the pyspark sdist ships Spark's jars
        # (bin/spark-class, jars/), so this is also what ci/spark/cluster.sh
        # starts a standalone master + workers from. Needs Java 17. Only
        # py4j comes with it (pinned in constraints.txt); pandas is not
        # pulled in (pyspark warns that pandas 3.x is not fully supported).
        "spark": ["pyspark==4.3.0"],
    },
    entry_points={"console_scripts": ["tfcascade=pipeline.cli:main"]},
)
