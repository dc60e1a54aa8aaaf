"""beam-rtbf: the right to be forgotten for streaming analytics, as one Apache Beam graph."""

from setuptools import find_packages, setup

# The former connector extras: the connectors are now installed by default (see
# install_requires), so these names add nothing; they stay so that `pip install '.[kafka]'`
# and the runner images' `[aws,kafka,redis]` keep working.
EXTRAS = {"kafka": [], "aws": [], "gcp": [], "redis": []}
# playwright drives Debian's chromium in the dashboard tests (executable_path: no browser download).
EXTRAS["test"] = ["pytest>=8,<10", "pytest-timeout>=2.2,<3", "ruff>=0.5", "moto[server]>=5,<6", "playwright==1.65.2"]
# bench/peers.py runs the same job in DuckDB and PySpark (local[2], Java 17) beside beam-rtbf.
EXTRAS["bench"] = ["redis>=5,<9", "matplotlib>=3.7,<4", "duckdb>=1.4,<2", "pyspark>=3.5,<4"]
EXTRAS["dev"] = sorted(set(EXTRAS["test"]) | set(EXTRAS["bench"]))

setup(
    name="beam-rtbf",
    version="0.1.0",
    description="Right to be forgotten (GDPR Art. 17, CCPA) for streaming analytics on Apache Beam",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["beam_rtbf", "beam_rtbf.*"]),
    package_data={"beam_rtbf.profiles": ["*.yaml"]},
    install_requires=[
        # The local streaming runner (beam_rtbf/local_runner.py) subclasses the
        # BundleBasedDirectRunner's executor and evaluator registry and re-states two of
        # its internal methods (run_pipeline, schedule_consumption); nothing in Beam is
        # patched. The pin keeps those internals at the version the runner re-states:
        # tests/unit/test_local_runner_isolation.py fails if their shape or source
        # changes. To move to a newer Beam, re-sync the two methods and that test first.
        "apache-beam>=2.77.0,<2.78",
        "pyarrow>=14,<26",
        "numpy>=1.24,<3",
        "PyYAML>=6,<7",
        "requests>=2.28,<3",  # the erasure API sink
        # The connector libraries every URI scheme and registry in the README needs,
        # installed by default so a plain `pip install .` runs every command it shows:
        "confluent-kafka>=2.3,<3",  # kafka://
        "boto3>=1.34,<2",  # kinesis://, and s3:// through Beam's S3 filesystem
        "google-cloud-pubsub>=2.18,<3",  # pubsub://
        "google-cloud-storage>=2.18.2,<4",  # gs:// through Beam's GCS filesystem
        "redis>=5,<9",  # redis:// and rediss:// registries
        # beam-rtbf dashboard: Dash (pinned: the tests read its rendered DOM), served by waitress;
        "dash==4.4.1",
        "waitress>=3.0.2,<4",
        # --analytics_sink postgresql:// and the dashboard's --analytics (the wheel brings its own libpq)
        "psycopg[binary]>=3.2,<4",
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["beam-rtbf=beam_rtbf.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Software Development :: Libraries",
    ],
)
