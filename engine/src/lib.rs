//! `hivlp`: the database users open, insert into and search.
