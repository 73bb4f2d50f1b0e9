//! The bundled authorization server (being written).
