"""Worker side of tfcascade (installed as `tfcascade.transforms`), grouped by
the data flow:

  formats/     byte formats any step uses: TFRecord framing, the Example
               codec, the dead-letter schema
  reading/     1. read: input files -> RecordChunks (byte ranges, provenance)
  scoring/     2. score: a chunk -> encoded rows, dead letters, counts
  writing/     3. write: encoders, and staged files with a commit protocol
  publishing/  4. publish: output layout, run registry, the last step
  engine/      the TF-only cascade (one graph, one session, every model)
  accounting   RunCounts: what each piece of work did, summed as data
  metrics      the Beam metrics, one namespace
  beam/        the Beam adapter (one transform per step; RunInference handler)
  spark/       the Spark adapter (what one task runs)

The steps are engine-agnostic; a third engine adds one adapter. Importing
this package imports nothing heavy, and nothing here imports the launcher
(`tfcascade.pipeline`).
"""
