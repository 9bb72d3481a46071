//! Errors of the quantization layer.

use super::GgmlType;

/// Why a row could not be encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// A NaN or infinity in the weights: the checkpoint is broken.
    #[error("row {row}, column {col} is {value}: the weights are not finite")]
    NonFinite {
        /// Row index.
        row: usize,
        /// Column index.
        col: usize,
        /// The value.
        value: f32,
    },
    /// The row length is not a multiple of the type's block.
    #[error("{ty} needs rows that are a multiple of {block} elements, not {n_per_row}")]
    BadRowLength {
        /// The type.
        ty: GgmlType,
        /// Its block size.
        block: usize,
        /// The row length given.
        n_per_row: usize,
    },
    /// The importance matrix does not fit the row.
    #[error("importance matrix has {got} columns, the tensor has {want}")]
    BadImatrix {
        /// Columns in the imatrix entry.
        got: usize,
        /// Columns in the tensor.
        want: usize,
    },
    /// kvant does not encode this type.
    #[error("{0} is not supported")]
    Unsupported(GgmlType),
}
