//! A pickle *interpreter* for `torch.save` files that never runs code.
//!
//! It understands the opcodes PyTorch writes (protocol 2, plus the
//! protocol-4 framing opcodes) and resolves `GLOBAL`s only against
//! [`Global`]'s allowlist, modelled on `torch.load(weights_only=True)`. A
//! global outside it is refused with its name; nothing is imported or
//! called. Resources are capped: opcodes, stack, memo, container sizes and
//! string lengths (checked against the bytes left before allocating).
//! Memoized values are shared (`Rc`), never deep-copied, so a pickle cannot
//! amplify memory through its memo; containers nest at most
//! [`MAX_NESTING`](super::nesting::MAX_NESTING) levels (see [`super::nesting`]),
//! so nothing that walks a value can overflow the stack.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::nesting::Nesting;
use crate::source::DType;

/// What a pickle may refer to: exactly these, nothing else.
#[derive(Debug, Clone, PartialEq)]
pub enum Global {
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter` (and `_with_state`).
    RebuildParameter,
    /// A typed storage class (`torch.FloatStorage`, …).
    Storage(DType),
    /// `torch.device` (kept inert).
    Device,
    /// `_codecs.encode` (how protocol 2 pickles bytes).
    CodecsEncode,
}

/// A storage reference from a persistent id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    /// Key of the `data/<key>` entry.
    pub key: String,
    /// Element type.
    pub dtype: DType,
    /// Elements in the storage (the view's, for a legacy storage view).
    pub numel: usize,
    /// Where the storage starts in its key's data, in elements: 0, or a
    /// legacy storage view's offset into its root storage.
    pub offset: usize,
}

/// A tensor as `_rebuild_tensor_v2` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    /// Its storage.
    pub storage: StorageRef,
    /// Offset into the storage, in elements.
    pub offset: usize,
    /// Shape.
    pub size: Vec<usize>,
    /// Strides, in elements.
    pub stride: Vec<usize>,
}

/// A pickled value.
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int that fits 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(Rc<str>),
    /// Bytes.
    Bytes(Rc<[u8]>),
    /// A tuple.
    Tuple(Rc<Vec<Value>>),
    /// A list (shared, mutable while unpickling).
    List(Rc<RefCell<Vec<Value>>>),
    /// A dict, keys in insertion order.
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// An allowlisted global.
    Global(Global),
    /// A storage reference.
    Storage(Rc<StorageRef>),
    /// A tensor.
    Tensor(Rc<TensorRef>),
    /// An allowed value kvant does not need (a device).
    Opaque,
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Why unpickling stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickleError {
    /// A global outside the allowlist (`module.name`).
    Forbidden(String),
    /// A dtype kvant does not convert (complex numbers).
    UnsupportedDtype(String),
    /// Malformed or over a limit; the reason says which.
    Bad(String),
}

/// Resource limits.
const MAX_OPS: usize = 200_000_000;
const MAX_STACK: usize = 1_000_000;
const MAX_MEMO: usize = 10_000_000;
const MAX_DIMS: usize = 8;
/// Values held by all containers together (a state dict holds a few per
/// tensor); bounds what a small pickle of `EMPTY_TUPLE APPEND` pairs can
/// make the interpreter allocate.
const MAX_ITEMS: usize = 20_000_000;

fn storage_dtype(module: &str, name: &str) -> Result<Option<DType>, PickleError> {
    if module != "torch" {
        return Ok(None);
    }
    Ok(Some(match name {
        "FloatStorage" => DType::F32,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "DoubleStorage" => DType::F64,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" => DType::U8,
        "BoolStorage" => DType::Bool,
        "ComplexFloatStorage" | "ComplexDoubleStorage" | "ComplexHalfStorage" => {
            return Err(PickleError::UnsupportedDtype(format!(
                "complex tensors ({name}) are not supported: a language model's weights are real numbers"
            )))
        }
        _ => return Ok(None),
    }))
}

fn resolve(module: &str, name: &str) -> Result<Global, PickleError> {
    if let Some(dt) = storage_dtype(module, name)? {
        return Ok(Global::Storage(dt));
    }
    Ok(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameter,
        ("torch", "device") => Global::Device,
        ("_codecs", "encode") => Global::CodecsEncode,
        _ => return Err(PickleError::Forbidden(format!("{module}.{name}"))),
    })
}

/// Resolves a persistent id to a storage; `storage_len(key)` gives the
/// byte length of `data/<key>` if that entry exists.
pub type StorageLookup<'a> = dyn Fn(&str) -> Option<usize> + 'a;

/// Every storage a pickle referred to: key → (dtype, elements). The legacy
/// format stores the data after the pickle, so its reader checks these
/// against the data it finds.
pub type StorageTypes = HashMap<String, (DType, usize)>;

/// A pickle interpreted from the front of a byte stream.
#[derive(Debug)]
pub struct Unpickled {
    /// The value.
    pub value: Value,
    /// Bytes consumed, up to and including `STOP`.
    pub len: usize,
    /// The storages its persistent ids named.
    pub storages: StorageTypes,
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<usize, Value>,
    /// `None`: the storages' sizes are checked later (legacy format).
    storage_len: Option<&'a StorageLookup<'a>>,
    storage_types: StorageTypes,
    nesting: Nesting,
    items: usize,
}

fn bad<T>(msg: impl Into<String>) -> Result<T, PickleError> {
    Err(PickleError::Bad(msg.into()))
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                PickleError::Bad(format!(
                    "pickle ends inside an operand at byte {}",
                    self.pos
                ))
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }

    fn push(&mut self, v: Value) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_STACK {
            return bad("pickle stack too deep");
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        if self.marks.last().is_some_and(|&m| self.stack.len() <= m) {
            return bad("pickle pops past a mark");
        }
        self.stack
            .pop()
            .ok_or_else(|| PickleError::Bad("pickle stack underflow".into()))
    }

    fn top(&mut self) -> Result<&mut Value, PickleError> {
        self.stack
            .last_mut()
            .ok_or_else(|| PickleError::Bad("pickle stack underflow".into()))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| PickleError::Bad("no mark".into()))?;
        if m > self.stack.len() {
            return bad("mark beyond stack");
        }
        Ok(self.stack.split_off(m))
    }

    fn string(&mut self, n: usize) -> Result<Value, PickleError> {
        let s = self.take(n)?;
        let s =
            std::str::from_utf8(s).map_err(|_| PickleError::Bad("string is not UTF-8".into()))?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn memo_put(&mut self, idx: usize) -> Result<(), PickleError> {
        if idx >= MAX_MEMO {
            return bad(format!("memo index {idx} over the limit"));
        }
        let v = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| PickleError::Bad("memo of empty stack".into()))?;
        // Sparse: a corrupt (or hostile) index costs one entry, not a
        // table that long.
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: usize) -> Result<(), PickleError> {
        let v = self
            .memo
            .get(&idx)
            .cloned()
            .ok_or_else(|| PickleError::Bad(format!("memo index {idx} was never stored")))?;
        self.push(v)
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return bad("odd number of dict items");
        }
        let target = self.top()?.clone();
        let Value::Dict(d) = &target else {
            return bad("SETITEM on something that is not a dict");
        };
        self.adopt(&target, &items)?;
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        let target = self.top()?.clone();
        let Value::List(l) = &target else {
            return bad("APPEND on something that is not a list");
        };
        self.adopt(&target, &items)?;
        l.borrow_mut().extend(items);
        Ok(())
    }

    /// Puts `items` inside `parent`, within the nesting and size limits.
    fn adopt(&mut self, parent: &Value, items: &[Value]) -> Result<(), PickleError> {
        self.items += items.len();
        if self.items > MAX_ITEMS {
            return bad(format!(
                "containers hold more than {MAX_ITEMS} values in all"
            ));
        }
        self.nesting.adopt(parent, items)
    }

    /// Pushes a container just made of `items`.
    fn push_new(&mut self, container: Value, items: &[Value]) -> Result<(), PickleError> {
        self.items += items.len();
        if self.items > MAX_ITEMS {
            return bad(format!(
                "containers hold more than {MAX_ITEMS} values in all"
            ));
        }
        self.nesting.created(&container, items)?;
        self.push(container)
    }

    /// Pushes a new tuple of `items`.
    fn push_tuple(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        let t = Rc::new(items);
        self.push_new(Value::Tuple(t.clone()), &t)
    }

    /// A storage from its persistent id: `('storage', type, key, location,
    /// numel)` in a zip archive, `(…, numel, view)` in the legacy format,
    /// where `view` is `None` or `(view_key, offset, numel)` into the key's
    /// storage.
    fn persistent(&mut self, pid: Value) -> Result<Value, PickleError> {
        let Value::Tuple(t) = pid else {
            return bad("persistent id is not a tuple");
        };
        let (tag, ty, key, numel, view) = match t.as_slice() {
            [tag, ty, key, _location, numel] => (tag, ty, key, numel, None),
            [tag, ty, key, _location, numel, view] => (tag, ty, key, numel, Some(view)),
            _ => return bad(format!("persistent id has {} fields, expected 5", t.len())),
        };
        if tag.as_str() != Some("storage") {
            return bad("persistent id is not a storage");
        }
        let Value::Global(Global::Storage(dtype)) = ty else {
            return bad("persistent id names no storage type");
        };
        let dtype = *dtype;
        let key = key
            .as_str()
            .ok_or_else(|| PickleError::Bad("storage key is not a string".into()))?;
        if key.is_empty() || !key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            return bad(format!("storage key '{key}' is not a plain name"));
        }
        let numel = non_negative(numel, "storage size")?;
        if let Some(storage_len) = self.storage_len {
            let len = storage_len(key).ok_or_else(|| {
                PickleError::Bad(format!("storage data/{key} is missing from the archive"))
            })?;
            if numel.checked_mul(dtype.size()) != Some(len) {
                return bad(format!(
                    "storage data/{key} holds {len} bytes, but {numel} {dtype:?} elements were promised"
                ));
            }
        }
        match self.storage_types.insert(key.to_owned(), (dtype, numel)) {
            Some(prev) if prev.0 != dtype => {
                return bad(format!(
                    "storage {key} is used as both {:?} and {dtype:?}",
                    prev.0
                ))
            }
            Some(prev) if prev.1 != numel => {
                return bad(format!(
                    "storage {key} is said to hold both {} and {numel} elements",
                    prev.1
                ))
            }
            _ => {}
        }
        let (offset, numel) = match view {
            None | Some(Value::None) => (0, numel),
            Some(view) => storage_view(view, numel)?,
        };
        Ok(Value::Storage(Rc::new(StorageRef {
            key: key.to_owned(),
            dtype,
            numel,
            offset,
        })))
    }

    fn reduce(&mut self, f: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Global(g) = f else {
            return bad("REDUCE of something that is not an allowed callable");
        };
        let Value::Tuple(args) = args else {
            return bad("REDUCE arguments are not a tuple");
        };
        match g {
            Global::OrderedDict => Ok(Value::Dict(Rc::default())),
            Global::RebuildParameter => match args.first() {
                Some(v @ Value::Tensor(_)) => Ok(v.clone()),
                _ => bad("_rebuild_parameter without a tensor"),
            },
            Global::RebuildTensorV2 => rebuild_tensor(&args),
            Global::Device => Ok(Value::Opaque),
            Global::CodecsEncode => match args.first() {
                // protocol 2 stores bytes as latin-1 text: code points < 256.
                Some(Value::Str(s)) => {
                    let bytes: Option<Vec<u8>> =
                        s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                    bytes
                        .map(|b| Value::Bytes(Rc::from(b)))
                        .ok_or_else(|| PickleError::Bad("encoded bytes out of range".into()))
                }
                _ => bad("_codecs.encode without a string"),
            },
            Global::Storage(_) => bad("a storage class is not callable here"),
        }
    }

    fn run(&mut self) -> Result<Value, PickleError> {
        let mut ops = 0usize;
        loop {
            ops += 1;
            if ops > MAX_OPS {
                return bad("pickle has too many opcodes");
            }
            let at = self.pos;
            let op = self.byte()?;
            match op {
                0x80 => {
                    let proto = self.byte()?;
                    if proto > 5 {
                        return bad(format!("pickle protocol {proto} is unknown"));
                    }
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'}' => self.push_new(Value::Dict(Rc::default()), &[])?,
                b']' => self.push_new(Value::List(Rc::default()), &[])?,
                b')' => self.push_tuple(Vec::new())?,
                b'(' => {
                    if self.marks.len() >= MAX_STACK {
                        return bad("too many marks");
                    }
                    self.marks.push(self.stack.len());
                }
                b'q' => {
                    let i = usize::from(self.byte()?);
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()? as usize;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len();
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = usize::from(self.byte()?);
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.u32()? as usize;
                    self.memo_get(i)?;
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.push(v)?;
                }
                0x8c => {
                    let n = usize::from(self.byte()?);
                    let v = self.string(n)?;
                    self.push(v)?;
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?)
                        .map_err(|_| PickleError::Bad("string too long".into()))?;
                    let v = self.string(n)?;
                    self.push(v)?;
                }
                b'C' => {
                    let n = usize::from(self.byte()?);
                    let b = self.take(n)?;
                    self.push(Value::Bytes(Rc::from(b)))?;
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.push(Value::Bytes(Rc::from(b)))?;
                }
                0x8e => {
                    let n = usize::try_from(self.u64()?)
                        .map_err(|_| PickleError::Bad("bytes too long".into()))?;
                    let b = self.take(n)?;
                    self.push(Value::Bytes(Rc::from(b)))?;
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'K' => {
                    let v = self.byte()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'M' => {
                    let s = self.take(2)?;
                    self.push(Value::Int(i64::from(u16::from_le_bytes([s[0], s[1]]))))?;
                }
                0x8a => {
                    let n = usize::from(self.byte()?);
                    if n > 8 {
                        return bad(format!("integer of {n} bytes does not fit 64 bits"));
                    }
                    let b = self.take(n)?;
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= i64::from(x) << (8 * i);
                    }
                    // Sign-extend from the top byte.
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.push(Value::Int(v))?;
                }
                b'G' => {
                    let s = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(s);
                    self.push(Value::Float(f64::from_be_bytes(a)))?;
                }
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'N' => self.push(Value::None)?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_tuple(items)?;
                }
                0x85 => {
                    let a = self.pop()?;
                    self.push_tuple(vec![a])?;
                }
                0x86 => {
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.push_tuple(vec![a, b])?;
                }
                0x87 => {
                    let c = self.pop()?;
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.push_tuple(vec![a, b, c])?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let list = Rc::new(RefCell::new(items));
                    let v = Value::List(list.clone());
                    self.push_new(v, &list.borrow())?;
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push_new(Value::Dict(Rc::default()), &[])?;
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = resolve(&module, &name)?;
                    self.push(Value::Global(g))?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.as_str(), name.as_str()) {
                        (Some(m), Some(n)) => {
                            let g = resolve(m, n)?;
                            self.push(Value::Global(g))?;
                        }
                        _ => return bad("STACK_GLOBAL without strings"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    match self.reduce(f, args)? {
                        v @ Value::Dict(_) => self.push_new(v, &[])?,
                        v => self.push(v)?,
                    }
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    match cls {
                        Value::Global(Global::OrderedDict) => {
                            self.push_new(Value::Dict(Rc::default()), &[])?
                        }
                        _ => {
                            let _ = args;
                            return bad("NEWOBJ of a class other than OrderedDict");
                        }
                    }
                }
                b'b' => {
                    // BUILD sets attributes (an OrderedDict's `_metadata`,
                    // a parameter's state): kvant needs none of them.
                    let _state = self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(pid)?;
                    self.push(v)?;
                }
                other => {
                    return bad(format!(
                        "unsupported pickle opcode 0x{other:02x} at byte {at}"
                    ));
                }
            }
        }
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .take(256)
            .position(|&c| c == b'\n')
            .ok_or_else(|| PickleError::Bad("GLOBAL name not terminated".into()))?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| PickleError::Bad("GLOBAL name not UTF-8".into()))?;
        self.pos += n + 1;
        Ok(s.to_owned())
    }
}

fn non_negative(v: &Value, what: &str) -> Result<usize, PickleError> {
    match v {
        Value::Int(n) if *n >= 0 => Ok(*n as usize),
        _ => bad(format!("{what} is not a non-negative int")),
    }
}

/// A legacy storage view `(view_key, offset, numel)` inside a storage of
/// `root_numel` elements: its (offset, numel), checked to lie inside.
fn storage_view(view: &Value, root_numel: usize) -> Result<(usize, usize), PickleError> {
    let Value::Tuple(v) = view else {
        return bad("storage view is not a tuple");
    };
    let [_view_key, offset, numel] = v.as_slice() else {
        return bad(format!("storage view has {} fields, expected 3", v.len()));
    };
    let offset = non_negative(offset, "storage view offset")?;
    let numel = non_negative(numel, "storage view size")?;
    if offset.checked_add(numel).is_none_or(|end| end > root_numel) {
        return bad(format!(
            "storage view ({numel} elements at {offset}) exceeds its storage of {root_numel}"
        ));
    }
    Ok((offset, numel))
}

fn ints(v: &Value, what: &str) -> Result<Vec<usize>, PickleError> {
    let Value::Tuple(t) = v else {
        return bad(format!("tensor {what} is not a tuple"));
    };
    if t.len() > MAX_DIMS {
        return bad(format!("tensor has {} dimensions", t.len()));
    }
    t.iter()
        .map(|x| match x {
            Value::Int(i) if *i >= 0 => Ok(*i as usize),
            _ => bad(format!(
                "tensor {what} holds a non-integer or negative value"
            )),
        })
        .collect()
}

fn rebuild_tensor(args: &[Value]) -> Result<Value, PickleError> {
    if !(6..=7).contains(&args.len()) {
        return bad(format!("_rebuild_tensor_v2 with {} arguments", args.len()));
    }
    let Value::Storage(storage) = &args[0] else {
        return bad("_rebuild_tensor_v2 without a storage");
    };
    let offset = match &args[1] {
        Value::Int(i) if *i >= 0 => *i as usize,
        _ => return bad("tensor offset is not a non-negative int"),
    };
    let size = ints(&args[2], "size")?;
    let stride = ints(&args[3], "stride")?;
    if size.len() != stride.len() {
        return bad("tensor size and stride differ in length");
    }
    // Every element must lie inside the storage (checked arithmetic).
    if size.iter().all(|&d| d > 0) {
        let last = size.iter().zip(&stride).try_fold(offset, |a, (&d, &s)| {
            (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
        });
        match last {
            Some(l) if l < storage.numel => {}
            _ => {
                return bad(format!(
                    "tensor view (offset {offset}, size {size:?}, stride {stride:?}) exceeds its storage of {} elements",
                    storage.numel
                ))
            }
        }
    }
    Ok(Value::Tensor(Rc::new(TensorRef {
        storage: (**storage).clone(),
        offset,
        size,
        stride,
    })))
}

/// Interprets `data` (a `data.pkl`). `storage_len(key)` gives the byte
/// length of the archive's `data/<key>` entry, or `None` when it is absent.
pub fn unpickle(data: &[u8], storage_len: &StorageLookup<'_>) -> Result<Value, PickleError> {
    Ok(unpickle_prefix(data, Some(storage_len))?.value)
}

/// Interprets the pickle at the front of `data`, which may continue with
/// other things (the legacy format's next pickle). Without `storage_len`
/// the storages are only recorded in [`Unpickled::storages`], for the
/// caller to check against their data.
pub fn unpickle_prefix(
    data: &[u8],
    storage_len: Option<&StorageLookup<'_>>,
) -> Result<Unpickled, PickleError> {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        storage_len,
        storage_types: Default::default(),
        nesting: Nesting::default(),
        items: 0,
    };
    let value = m.run()?;
    Ok(Unpickled {
        value,
        len: m.pos,
        storages: std::mem::take(&mut m.storage_types),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<usize> {
        None
    }

    #[test]
    fn plain_values_round_trip() {
        // {'a': 1, 'b': [True, 2.5], 'c': (None,)} in protocol 2
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00b]q\x01(\x88G@\x04\x00\x00\x00\x00\x00\x00eX\x01\x00\x00\x00cN\x85u.";
        let v = unpickle(p, &none).expect("valid");
        let Value::Dict(d) = v else {
            panic!("not a dict")
        };
        assert_eq!(d.borrow().len(), 3);
    }

    #[test]
    fn a_forbidden_global_is_refused_by_name() {
        let p = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00ls\x85R.";
        assert_eq!(
            unpickle(p, &none).expect_err("refused"),
            PickleError::Forbidden("posix.system".into())
        );
    }

    #[test]
    fn long1_sign_extends() {
        let p = b"\x8a\x02\xff\xff.";
        let Value::Int(v) = unpickle(p, &none).expect("valid") else {
            panic!()
        };
        assert_eq!(v, -1);
    }

    fn refusal(p: &[u8]) -> String {
        match unpickle(p, &none) {
            Err(PickleError::Bad(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn nesting_is_bounded_however_it_is_built() {
        let deep = 100_000;
        let mut tuples = b")".to_vec();
        tuples.extend(std::iter::repeat_n(0x85u8, deep));
        let mut lists = vec![b']'; deep];
        lists.extend(std::iter::repeat_n(b'a', deep - 1));
        for mut p in [tuples, lists] {
            p.push(b'.');
            assert!(refusal(&p).contains("nested more than"));
        }
        // Just inside the limit is fine.
        let mut ok = b")".to_vec();
        ok.extend(std::iter::repeat_n(
            0x85u8,
            super::super::nesting::MAX_NESTING as usize - 1,
        ));
        ok.push(b'.');
        assert!(unpickle(&ok, &none).is_ok());
    }

    #[test]
    fn self_references_are_refused() {
        // l = []; l.append(l)
        assert!(refusal(b"]q\x002a.").contains("contains itself"));
        // a = []; b = [a]; a.append(0): a changes after entering b.
        assert!(refusal(b"]q\x00]h\x00ah\x00K\x00a0.").contains("changed after"));
    }

    #[test]
    fn huge_string_length_is_an_error_not_an_allocation() {
        let p = b"X\xff\xff\xff\xff";
        assert!(matches!(unpickle(p, &none), Err(PickleError::Bad(_))));
    }
}
