"""The Spark adapter: what one Spark task runs (pyspark is imported only
inside the task function)."""
