//! h2tunnel conformance cases (seed 000 and the notes), each with a stable ID.
