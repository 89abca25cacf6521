//! `hivlp-storage`: the on-disk format of a hivlp database. It knows nothing of models.
