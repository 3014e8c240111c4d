//! Placeholder: the local PostgreSQL's administration (being written).
