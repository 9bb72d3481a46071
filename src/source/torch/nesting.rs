//! How deeply the pickle interpreter's containers nest, bounded.
//!
//! Everything that later walks an unpickled value — dropping it, turning
//! `model_args` into JSON — recurses once per level, so a pickle of
//! 100 000 nested tuples (`)` followed by `TUPLE1` × 100 000, 100 kB)
//! would overflow the stack and abort the process. The interpreter
//! therefore knows each container's depth and refuses to build one deeper
//! than [`MAX_NESTING`], naming the limit.
//!
//! A depth is exact only if a container cannot change after it has been
//! placed inside another (otherwise a parent's depth would go stale).
//! Python's pickler never does that — children are complete before the
//! parent's `APPENDS`/`SETITEMS` — except for self-referencing objects,
//! which no state dict holds. So a container becomes *sealed* when it is
//! put inside another, and mutating a sealed container, or putting a
//! container inside itself, is refused. That also rules out cycles.
//!
//! The bookkeeping is keyed by the container's `Rc` address: a container
//! is registered when it is created, which overwrites whatever a freed
//! container at the same address left behind.

use std::collections::HashMap;
use std::rc::Rc;

use super::pickle::{PickleError, Value};

/// Deepest container nesting accepted. A state dict nests three or four
/// levels (checkpoint → state dict → tensor arguments → tuples); hostile
/// depths are thousands.
pub const MAX_NESTING: u32 = 200;

#[derive(Debug, Clone, Copy)]
struct Node {
    depth: u32,
    sealed: bool,
}

/// Depth and seal of every live container.
#[derive(Debug, Default)]
pub struct Nesting {
    nodes: HashMap<usize, Node>,
}

/// The address identifying a container, `None` for a scalar.
fn address(v: &Value) -> Option<usize> {
    Some(match v {
        Value::Tuple(t) => Rc::as_ptr(t) as *const () as usize,
        Value::List(l) => Rc::as_ptr(l) as *const () as usize,
        Value::Dict(d) => Rc::as_ptr(d) as *const () as usize,
        _ => return None,
    })
}

fn too_deep() -> PickleError {
    PickleError::Bad(format!(
        "containers nested more than {MAX_NESTING} levels deep (a checkpoint nests a few)"
    ))
}

impl Nesting {
    /// The depth of `v`: 0 for a scalar, 1 for an empty container.
    pub fn depth(&self, v: &Value) -> u32 {
        address(v).map_or(0, |a| self.nodes.get(&a).map_or(1, |n| n.depth))
    }

    /// Registers a container just created from `children` (a tuple, or a
    /// list or dict built from a mark), sealing the children.
    pub fn created(&mut self, container: &Value, children: &[Value]) -> Result<(), PickleError> {
        if let Some(a) = address(container) {
            self.nodes.insert(
                a,
                Node {
                    depth: 1,
                    sealed: false,
                },
            );
        }
        self.adopt(container, children)
    }

    /// Records that `children` were put inside `parent` (APPEND, SETITEM):
    /// seals them and deepens `parent`.
    pub fn adopt(&mut self, parent: &Value, children: &[Value]) -> Result<(), PickleError> {
        let Some(pa) = address(parent) else {
            return Ok(());
        };
        let mut node = self.nodes.get(&pa).copied().unwrap_or(Node {
            depth: 1,
            sealed: false,
        });
        if node.sealed && !children.is_empty() {
            return Err(PickleError::Bad(
                "a container is changed after being placed inside another (a self-referencing structure, which no checkpoint holds)".into(),
            ));
        }
        for child in children {
            let Some(ca) = address(child) else { continue };
            if ca == pa {
                return Err(PickleError::Bad("a container contains itself".into()));
            }
            let d = self.depth(child);
            node.depth = node.depth.max(d + 1);
            if node.depth > MAX_NESTING {
                return Err(too_deep());
            }
            self.nodes.insert(
                ca,
                Node {
                    depth: d,
                    sealed: true,
                },
            );
        }
        self.nodes.insert(pa, node);
        Ok(())
    }
}
