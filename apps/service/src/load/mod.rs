//! `holdfast load`.
