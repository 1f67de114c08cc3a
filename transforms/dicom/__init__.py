"""DICOM Part 10 files, without Apache Beam: a structural header walk (``header``) and the
validation of a file before it is sent (``peek``). Nothing here imports Beam."""
