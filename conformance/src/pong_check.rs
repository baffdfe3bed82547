//! pong conformance checker cases (seed 001 and the notes), each with a stable ID.
