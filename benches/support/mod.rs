//! Helpers shared by the benchmarks (each bench binary includes this
//! module; not every bench uses every item).
#![allow(dead_code)]

pub mod args;
pub mod bench_model;
pub mod measure;
pub mod torch_zip;
