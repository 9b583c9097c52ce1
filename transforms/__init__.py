"""Worker-side building blocks of tfcascade.

Importing this package imports nothing heavy: `transforms.engine` is TF-only
(usable without Beam); the Beam transforms live in their own modules.
"""
