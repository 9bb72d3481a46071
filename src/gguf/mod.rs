//! The GGUF file format: values, layout, a streaming writer and a bounded
//! reader.
//!
//! This module owns the bytes. It must not know model families or quant
//! policy: callers hand it metadata, a tensor table and tensor data.

mod error;
mod layout;
mod reader;
mod value;
mod writer;

pub use error::GgufError;
pub use layout::{offsets, pad, TensorInfo, ALIGNMENT, MAX_TENSOR_NAME};
pub use reader::{GgufFile, GgufTensor};
pub use value::{GgufArray, GgufValue, Metadata, ValueType};
pub use writer::{GgufWriter, WrittenGguf, MAGIC, VERSION};
