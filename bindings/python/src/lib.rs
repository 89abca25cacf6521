//! Python bindings for hivlp.
