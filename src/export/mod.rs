//! Exporters (to be written).
