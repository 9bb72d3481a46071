//! A renderer for the subset of Go's `text/template` that Ollama chat
//! templates use, following Go's semantics for that subset exactly: text and
//! `{{ pipeline }}` actions, trim markers `{{-` / `-}}`, comments,
//! `if`/`else if`/`else`/`end`, `range` (with `$i, $e :=` and `else`),
//! variables (`$`, `$x := …`, `$x = …`), fields (`.A.B`, `$x.A`, `(…).A`),
//! string/number/bool literals, and the builtins `eq ne lt le gt ge and or
//! not len slice index`.
//!
//! It exists so that the proof in [`super::proof`] renders the generated Go
//! template text itself, not a model of it. It must not know about Jinja or
//! chat families. Invariants: the template text, nesting depth and output
//! size are capped; bad input is an error, never a panic.

use std::collections::BTreeMap;

/// Longest template text accepted.
const MAX_TEMPLATE_BYTES: usize = 256 * 1024;
/// Deepest nesting of blocks and parentheses accepted.
const MAX_DEPTH: usize = 64;
/// Largest output produced before rendering stops with an error.
const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;

/// A value in the template's data, shaped like the Go values Ollama passes
/// (`map[string]any`, `[]*api.Message`, strings, ints, bools).
#[derive(Debug, Clone, PartialEq)]
pub enum GoValue {
    /// Go's untyped nil: a missing map key prints as `<no value>`.
    Nil,
    /// A bool.
    Bool(bool),
    /// An int.
    Int(i64),
    /// A string.
    Str(String),
    /// A slice.
    List(Vec<GoValue>),
    /// A map or struct: fields by name.
    Map(BTreeMap<String, GoValue>),
}

impl GoValue {
    /// Go's truth: false, 0, nil and empty strings, slices and maps are false.
    fn truthy(&self) -> bool {
        match self {
            GoValue::Nil => false,
            GoValue::Bool(b) => *b,
            GoValue::Int(i) => *i != 0,
            GoValue::Str(s) => !s.is_empty(),
            GoValue::List(l) => !l.is_empty(),
            GoValue::Map(m) => !m.is_empty(),
        }
    }

    /// What `fmt.Fprint` writes for the value.
    fn print(&self, out: &mut String) {
        match self {
            GoValue::Nil => out.push_str("<no value>"),
            GoValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            GoValue::Int(i) => out.push_str(&i.to_string()),
            GoValue::Str(s) => out.push_str(s),
            GoValue::List(l) => {
                out.push('[');
                for (n, v) in l.iter().enumerate() {
                    if n > 0 {
                        out.push(' ');
                    }
                    v.print(out);
                }
                out.push(']');
            }
            GoValue::Map(m) => {
                out.push_str("map[");
                for (n, (k, v)) in m.iter().enumerate() {
                    if n > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    v.print(out);
                }
                out.push(']');
            }
        }
    }
}

/// Why a Go template could not be parsed or executed; the message says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("go template: {0}")]
pub struct GoTemplateError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, GoTemplateError> {
    Err(GoTemplateError(msg.into()))
}

#[derive(Debug, Clone)]
enum Arg {
    Dot(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Bool(bool),
    Nil,
    Func(String),
    Sub(Box<Pipe>, Vec<String>),
}

#[derive(Debug, Clone)]
struct Pipe {
    decl: Vec<String>,
    assign: bool,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipe),
    If(Vec<(Pipe, Vec<Node>)>, Vec<Node>),
    Range(Pipe, Vec<Node>, Vec<Node>),
}

/// A parsed Go template, ready to execute against data.
#[derive(Debug, Clone)]
pub struct GoTemplate {
    root: Vec<Node>,
}

/// One lexed piece of the template: literal text or an action's inner text.
enum Piece {
    Text(String),
    Action(String),
}

fn is_go_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn split_pieces(src: &str) -> Result<Vec<Piece>, GoTemplateError> {
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start_matches(is_go_space);
        }
        let after = &rest[start + 2..];
        // `{{- ` trims: the dash must be followed by a space character.
        let left_trim = after.starts_with('-') && after[1..].starts_with(is_go_space);
        if left_trim {
            text = text.trim_end_matches(is_go_space);
        }
        pieces.push(Piece::Text(text.to_string()));
        let body_start = if left_trim { 1 } else { 0 };
        let body = &after[body_start..];
        let end = find_action_end(body).ok_or_else(|| GoTemplateError("unclosed action".into()))?;
        let mut inner = &body[..end];
        trim_next = false;
        if inner.ends_with('-') && inner[..inner.len() - 1].ends_with(is_go_space) {
            inner = &inner[..inner.len() - 1];
            trim_next = true;
        }
        pieces.push(Piece::Action(inner.to_string()));
        rest = &body[end + 2..];
    }
    let mut text = rest;
    if trim_next {
        text = text.trim_start_matches(is_go_space);
    }
    pieces.push(Piece::Text(text.to_string()));
    Ok(pieces)
}

/// Where the action's `}}` is, skipping `}}` inside string literals.
fn find_action_end(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Pipe,
    Comma,
    Declare,
    Assign,
    Str(String),
    Int(i64),
    Dot(Vec<String>),
    Var(String, Vec<String>),
    Field(Vec<String>),
    Ident(String),
}

fn lex_fields(chars: &[char], i: &mut usize) -> Vec<String> {
    let mut fields = Vec::new();
    while *i < chars.len() && chars[*i] == '.' {
        let start = *i + 1;
        let mut j = start;
        while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        if j == start {
            break;
        }
        fields.push(chars[start..j].iter().collect());
        *i = j;
    }
    fields
}

fn lex_action(text: &str) -> Result<Vec<Tok>, GoTemplateError> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if is_go_space(c) => i += 1,
            '(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                i += 1;
                let fields = lex_fields(&chars, &mut i);
                toks.push(Tok::RParen);
                if !fields.is_empty() {
                    toks.push(Tok::Field(fields));
                }
            }
            '|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                toks.push(Tok::Assign);
                i += 1;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return err("unterminated quoted string");
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&e) = chars.get(i) else {
                                return err("unterminated quoted string");
                            };
                            i += 1;
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '\\' => '\\',
                                '"' => '"',
                                '\'' => '\'',
                                _ => return err(format!("unsupported escape \\{e}")),
                            });
                        }
                        c => s.push(c),
                    }
                }
                toks.push(Tok::Str(s));
            }
            '`' => {
                let start = i + 1;
                let Some(len) = chars[start..].iter().position(|&c| c == '`') else {
                    return err("unterminated raw quoted string");
                };
                toks.push(Tok::Str(chars[start..start + len].iter().collect()));
                i = start + len + 1;
            }
            '.' => {
                let fields = lex_fields(&chars, &mut i);
                if fields.is_empty() {
                    i += 1;
                }
                toks.push(Tok::Dot(fields));
            }
            '$' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                let fields = lex_fields(&chars, &mut i);
                toks.push(Tok::Var(name, fields));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                let n = s
                    .parse::<i64>()
                    .map_err(|_| GoTemplateError(format!("bad number {s:?}")))?;
                toks.push(Tok::Int(n));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            c => return err(format!("unexpected {c:?} in action")),
        }
    }
    Ok(toks)
}

struct PipeParser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl PipeParser {
    fn parse_pipe(&mut self, allow_decl: bool) -> Result<Pipe, GoTemplateError> {
        let mut decl = Vec::new();
        let mut assign = false;
        if allow_decl {
            // `$a :=`, `$a =`, or `$a, $b :=`.
            let save = self.pos;
            let mut names = Vec::new();
            while let Some(Tok::Var(name, f)) = self.toks.get(self.pos) {
                if !f.is_empty() {
                    break;
                }
                names.push(name.clone());
                self.pos += 1;
                if self.toks.get(self.pos) == Some(&Tok::Comma) {
                    self.pos += 1;
                    continue;
                }
                break;
            }
            match self.toks.get(self.pos) {
                Some(Tok::Declare) if !names.is_empty() && names.len() <= 2 => {
                    self.pos += 1;
                    decl = names;
                }
                Some(Tok::Assign) if names.len() == 1 => {
                    self.pos += 1;
                    decl = names;
                    assign = true;
                }
                _ => self.pos = save,
            }
        }
        let mut cmds = Vec::new();
        loop {
            let mut cmd = Vec::new();
            while let Some(tok) = self.toks.get(self.pos).cloned() {
                match tok {
                    Tok::Pipe | Tok::RParen => break,
                    _ => cmd.push(self.parse_arg()?),
                }
            }
            if cmd.is_empty() {
                return err("missing value for command");
            }
            cmds.push(cmd);
            if self.toks.get(self.pos) == Some(&Tok::Pipe) {
                self.pos += 1;
                continue;
            }
            break;
        }
        Ok(Pipe { decl, assign, cmds })
    }

    fn parse_arg(&mut self) -> Result<Arg, GoTemplateError> {
        let Some(tok) = self.toks.get(self.pos).cloned() else {
            return err("unexpected end of action");
        };
        self.pos += 1;
        Ok(match tok {
            Tok::Str(s) => Arg::Str(s),
            Tok::Int(n) => Arg::Int(n),
            Tok::Dot(f) => Arg::Dot(f),
            Tok::Var(n, f) => Arg::Var(n, f),
            Tok::Ident(id) => match id.as_str() {
                "true" => Arg::Bool(true),
                "false" => Arg::Bool(false),
                "nil" => Arg::Nil,
                _ => Arg::Func(id),
            },
            Tok::LParen => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return err("parentheses nested too deeply");
                }
                let inner = self.parse_pipe(false)?;
                self.depth -= 1;
                if self.toks.get(self.pos) != Some(&Tok::RParen) {
                    return err("unclosed left paren");
                }
                self.pos += 1;
                let mut fields = Vec::new();
                if let Some(Tok::Field(f)) = self.toks.get(self.pos) {
                    fields = f.clone();
                    self.pos += 1;
                }
                Arg::Sub(Box::new(inner), fields)
            }
            other => return err(format!("unexpected {other:?} in operand")),
        })
    }
}

fn parse_pipeline(text: &str, allow_decl: bool) -> Result<Pipe, GoTemplateError> {
    let mut p = PipeParser {
        toks: lex_action(text)?,
        pos: 0,
        depth: 0,
    };
    let pipe = p.parse_pipe(allow_decl)?;
    if p.pos != p.toks.len() {
        return err(format!("unexpected token in {text:?}"));
    }
    Ok(pipe)
}

/// How a list of nodes ended while parsing.
enum Terminator {
    Eof,
    End,
    Else,
    ElseIf(Pipe),
}

impl GoTemplate {
    /// Parses template text; errors name the construct that is not supported.
    pub fn parse(src: &str) -> Result<Self, GoTemplateError> {
        if src.len() > MAX_TEMPLATE_BYTES {
            return err(format!("template longer than {MAX_TEMPLATE_BYTES} bytes"));
        }
        let mut pieces = split_pieces(src)?.into_iter();
        let (root, term) = parse_list(&mut pieces, 0)?;
        match term {
            Terminator::Eof => Ok(GoTemplate { root }),
            _ => err("unexpected {{end}} or {{else}}"),
        }
    }

    /// Executes the template with `data` as dot (and `$`).
    pub fn execute(&self, data: &GoValue) -> Result<String, GoTemplateError> {
        let mut ex = Exec {
            out: String::new(),
            vars: vec![("$".into(), data.clone())],
        };
        ex.run(&self.root, data)?;
        Ok(ex.out)
    }
}

fn parse_list(
    pieces: &mut impl Iterator<Item = Piece>,
    depth: usize,
) -> Result<(Vec<Node>, Terminator), GoTemplateError> {
    if depth > MAX_DEPTH {
        return err("blocks nested too deeply");
    }
    let mut nodes = Vec::new();
    while let Some(piece) = pieces.next() {
        let action = match piece {
            Piece::Text(t) => {
                if !t.is_empty() {
                    nodes.push(Node::Text(t));
                }
                continue;
            }
            Piece::Action(a) => a,
        };
        let body = action.trim_matches(is_go_space);
        if body.starts_with("/*") {
            continue;
        }
        let (word, rest) = match body.find(is_go_space) {
            Some(i) => (&body[..i], body[i..].trim_start_matches(is_go_space)),
            None => (body, ""),
        };
        match word {
            "end" if rest.is_empty() => return Ok((nodes, Terminator::End)),
            "else" if rest.is_empty() => return Ok((nodes, Terminator::Else)),
            "else" => {
                let Some(cond) = rest.strip_prefix("if") else {
                    return err(format!("unsupported {{{{{body}}}}}"));
                };
                return Ok((nodes, Terminator::ElseIf(parse_pipeline(cond, true)?)));
            }
            "if" => nodes.push(parse_if(pieces, parse_pipeline(rest, true)?, depth)?),
            "range" => {
                let pipe = parse_pipeline(rest, true)?;
                let (body, term) = parse_list(pieces, depth + 1)?;
                let otherwise = match term {
                    Terminator::End => Vec::new(),
                    Terminator::Else => match parse_list(pieces, depth + 1)? {
                        (e, Terminator::End) => e,
                        _ => return err("range: expected {{end}}"),
                    },
                    _ => return err("range: unexpected EOF"),
                };
                nodes.push(Node::Range(pipe, body, otherwise));
            }
            "with" | "define" | "template" | "block" | "break" | "continue" => {
                return err(format!("{{{{{word}}}}} is not supported"))
            }
            _ => nodes.push(Node::Action(parse_pipeline(body, true)?)),
        }
    }
    Ok((nodes, Terminator::Eof))
}

fn parse_if(
    pieces: &mut impl Iterator<Item = Piece>,
    cond: Pipe,
    depth: usize,
) -> Result<Node, GoTemplateError> {
    let mut branches = Vec::new();
    let mut cond = cond;
    loop {
        let (body, term) = parse_list(pieces, depth + 1)?;
        branches.push((cond, body));
        match term {
            Terminator::End => return Ok(Node::If(branches, Vec::new())),
            Terminator::Else => match parse_list(pieces, depth + 1)? {
                (e, Terminator::End) => return Ok(Node::If(branches, e)),
                _ => return err("if: expected {{end}} after {{else}}"),
            },
            Terminator::ElseIf(next) => cond = next,
            Terminator::Eof => return err("if: unexpected EOF"),
        }
    }
}

struct Exec {
    out: String,
    vars: Vec<(String, GoValue)>,
}

fn field(mut v: GoValue, fields: &[String]) -> Result<GoValue, GoTemplateError> {
    for f in fields {
        v = match v {
            GoValue::Map(mut m) => m.remove(f).unwrap_or(GoValue::Nil),
            GoValue::Nil => return err(format!("nil pointer evaluating .{f}")),
            other => return err(format!("can't evaluate field {f} in {other:?}")),
        };
    }
    Ok(v)
}

fn compare(a: &GoValue, b: &GoValue) -> Result<std::cmp::Ordering, GoTemplateError> {
    match (a, b) {
        (GoValue::Int(x), GoValue::Int(y)) => Ok(x.cmp(y)),
        (GoValue::Str(x), GoValue::Str(y)) => Ok(x.cmp(y)),
        _ => err("incompatible types for comparison"),
    }
}

fn equal(a: &GoValue, b: &GoValue) -> Result<bool, GoTemplateError> {
    match (a, b) {
        (GoValue::Bool(x), GoValue::Bool(y)) => Ok(x == y),
        (GoValue::Nil, GoValue::Nil) => Ok(true),
        (GoValue::Int(_), GoValue::Int(_)) | (GoValue::Str(_), GoValue::Str(_)) => {
            Ok(compare(a, b)? == std::cmp::Ordering::Equal)
        }
        _ => err("incompatible types for comparison"),
    }
}

fn to_index(v: &GoValue, len: usize) -> Result<usize, GoTemplateError> {
    match v {
        GoValue::Int(i) if *i >= 0 && (*i as u64) <= len as u64 => Ok(*i as usize),
        _ => err(format!("index {v:?} out of range")),
    }
}

impl Exec {
    fn lookup(&self, name: &str) -> Result<GoValue, GoTemplateError> {
        match self.vars.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => Ok(v.clone()),
            None => err(format!("undefined variable: {name}")),
        }
    }

    fn run(&mut self, nodes: &[Node], dot: &GoValue) -> Result<(), GoTemplateError> {
        for node in nodes {
            if self.out.len() > MAX_OUTPUT_BYTES {
                return err("output too large");
            }
            match node {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(pipe) => {
                    let v = self.pipe(pipe, dot)?;
                    if pipe.decl.is_empty() {
                        v.print(&mut self.out);
                    }
                }
                Node::If(branches, otherwise) => {
                    let mark = self.vars.len();
                    let mut taken = false;
                    for (cond, body) in branches {
                        if self.pipe(cond, dot)?.truthy() {
                            self.run(body, dot)?;
                            taken = true;
                            break;
                        }
                    }
                    if !taken {
                        self.run(otherwise, dot)?;
                    }
                    self.vars.truncate(mark);
                }
                Node::Range(pipe, body, otherwise) => self.range(pipe, body, otherwise, dot)?,
            }
        }
        Ok(())
    }

    fn range(
        &mut self,
        pipe: &Pipe,
        body: &[Node],
        otherwise: &[Node],
        dot: &GoValue,
    ) -> Result<(), GoTemplateError> {
        let mark = self.vars.len();
        let inner = Pipe {
            decl: Vec::new(),
            assign: false,
            cmds: pipe.cmds.clone(),
        };
        let items: Vec<(GoValue, GoValue)> = match self.pipe(&inner, dot)? {
            GoValue::List(l) => l
                .into_iter()
                .enumerate()
                .map(|(i, v)| (GoValue::Int(i as i64), v))
                .collect(),
            GoValue::Map(m) => m.into_iter().map(|(k, v)| (GoValue::Str(k), v)).collect(),
            GoValue::Nil => Vec::new(),
            other => return err(format!("range can't iterate over {other:?}")),
        };
        if items.is_empty() {
            self.run(otherwise, dot)?;
        }
        for (key, elem) in items {
            let iter_mark = self.vars.len();
            match pipe.decl.as_slice() {
                [] => {}
                [e] => self.vars.push((e.clone(), elem.clone())),
                [k, e] => {
                    self.vars.push((k.clone(), key));
                    self.vars.push((e.clone(), elem.clone()));
                }
                _ => return err("too many range variables"),
            }
            self.run(body, &elem)?;
            self.vars.truncate(iter_mark);
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn pipe(&mut self, pipe: &Pipe, dot: &GoValue) -> Result<GoValue, GoTemplateError> {
        let mut prev: Option<GoValue> = None;
        for cmd in &pipe.cmds {
            prev = Some(self.command(cmd, dot, prev.take())?);
        }
        let value = prev.unwrap_or(GoValue::Nil);
        if let Some(name) = pipe.decl.first() {
            if pipe.assign {
                let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) else {
                    return err(format!("undefined variable: {name}"));
                };
                slot.1 = value.clone();
            } else {
                self.vars.push((name.clone(), value.clone()));
            }
        }
        Ok(value)
    }

    fn operand(&mut self, arg: &Arg, dot: &GoValue) -> Result<GoValue, GoTemplateError> {
        match arg {
            Arg::Dot(f) => field(dot.clone(), f),
            Arg::Var(n, f) => field(self.lookup(n)?, f),
            Arg::Str(s) => Ok(GoValue::Str(s.clone())),
            Arg::Int(i) => Ok(GoValue::Int(*i)),
            Arg::Bool(b) => Ok(GoValue::Bool(*b)),
            Arg::Nil => err("nil is not a command"),
            Arg::Func(name) => self.call(name, &[], dot, None),
            Arg::Sub(p, f) => {
                let v = self.pipe(p, dot)?;
                field(v, f)
            }
        }
    }

    fn command(
        &mut self,
        cmd: &[Arg],
        dot: &GoValue,
        piped: Option<GoValue>,
    ) -> Result<GoValue, GoTemplateError> {
        match cmd {
            [Arg::Func(name), args @ ..] => self.call(name, args, dot, piped),
            [single] if piped.is_none() => self.operand(single, dot),
            _ => err("can't give argument to non-function"),
        }
    }

    fn call(
        &mut self,
        name: &str,
        args: &[Arg],
        dot: &GoValue,
        piped: Option<GoValue>,
    ) -> Result<GoValue, GoTemplateError> {
        // `and`/`or` short-circuit (Go 1.18+): evaluate lazily.
        if name == "and" || name == "or" {
            if args.is_empty() {
                return err(format!("wrong number of args for {name}"));
            }
            let mut last = GoValue::Nil;
            for a in args {
                last = self.operand(a, dot)?;
                if last.truthy() != (name == "and") {
                    return Ok(last);
                }
            }
            if let Some(p) = piped {
                last = p;
            }
            return Ok(last);
        }
        let mut vals = Vec::with_capacity(args.len() + 1);
        for a in args {
            vals.push(self.operand(a, dot)?);
        }
        if let Some(p) = piped {
            vals.push(p);
        }
        let argc = |n: usize| -> Result<(), GoTemplateError> {
            if vals.len() == n {
                Ok(())
            } else {
                err(format!(
                    "wrong number of args for {name}: want {n} got {}",
                    vals.len()
                ))
            }
        };
        match name {
            "not" => {
                argc(1)?;
                Ok(GoValue::Bool(!vals[0].truthy()))
            }
            "eq" => {
                if vals.len() < 2 {
                    return err("missing argument for comparison");
                }
                for v in &vals[1..] {
                    if equal(&vals[0], v)? {
                        return Ok(GoValue::Bool(true));
                    }
                }
                Ok(GoValue::Bool(false))
            }
            "ne" => {
                argc(2)?;
                Ok(GoValue::Bool(!equal(&vals[0], &vals[1])?))
            }
            "lt" | "le" | "gt" | "ge" => {
                argc(2)?;
                let o = compare(&vals[0], &vals[1])?;
                use std::cmp::Ordering::*;
                Ok(GoValue::Bool(match name {
                    "lt" => o == Less,
                    "le" => o != Greater,
                    "gt" => o == Greater,
                    _ => o != Less,
                }))
            }
            "len" => {
                argc(1)?;
                let n = match &vals[0] {
                    GoValue::Str(s) => s.len(),
                    GoValue::List(l) => l.len(),
                    GoValue::Map(m) => m.len(),
                    other => return err(format!("len of {other:?}")),
                };
                Ok(GoValue::Int(n as i64))
            }
            "slice" => {
                if vals.is_empty() || vals.len() > 3 {
                    return err("wrong number of args for slice");
                }
                match &vals[0] {
                    GoValue::List(l) => {
                        let lo = vals.get(1).map_or(Ok(0), |v| to_index(v, l.len()))?;
                        let hi = vals.get(2).map_or(Ok(l.len()), |v| to_index(v, l.len()))?;
                        if lo > hi {
                            return err("slice: invalid indices");
                        }
                        Ok(GoValue::List(l[lo..hi].to_vec()))
                    }
                    GoValue::Str(s) => {
                        let lo = vals.get(1).map_or(Ok(0), |v| to_index(v, s.len()))?;
                        let hi = vals.get(2).map_or(Ok(s.len()), |v| to_index(v, s.len()))?;
                        match s.get(lo..hi) {
                            Some(sub) => Ok(GoValue::Str(sub.to_string())),
                            None => err("slice: invalid indices"),
                        }
                    }
                    other => err(format!("can't slice {other:?}")),
                }
            }
            "index" => {
                let mut v = vals
                    .first()
                    .cloned()
                    .ok_or_else(|| GoTemplateError("index of nothing".into()))?;
                for key in &vals[1..] {
                    v = match (v, key) {
                        (GoValue::List(l), k) => {
                            let i = to_index(k, l.len())?;
                            match l.get(i) {
                                Some(x) => x.clone(),
                                None => return err("index out of range"),
                            }
                        }
                        (GoValue::Map(mut m), GoValue::Str(k)) => {
                            m.remove(k).unwrap_or(GoValue::Nil)
                        }
                        _ => return err("can't index item"),
                    };
                }
                Ok(v)
            }
            other => err(format!("function {other:?} not defined")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(v: &str) -> GoValue {
        GoValue::Str(v.into())
    }

    fn msg(role: &str, content: &str) -> GoValue {
        GoValue::Map(BTreeMap::from([
            ("Role".into(), s(role)),
            ("Content".into(), s(content)),
        ]))
    }

    fn render(t: &str, data: &GoValue) -> String {
        GoTemplate::parse(t).unwrap().execute(data).unwrap()
    }

    #[test]
    fn trims_fields_and_conditionals_like_go() {
        let data = GoValue::Map(BTreeMap::from([
            ("System".into(), s("S")),
            ("Prompt".into(), s("P")),
        ]));
        assert_eq!(render("a  {{- .System -}}  b", &data), "aSb");
        assert_eq!(
            render(
                "{{ if .System }}<{{ .System }}>{{ else }}none{{ end }}{{ .Prompt }}",
                &data
            ),
            "<S>P"
        );
        assert_eq!(render("{{ .Missing }}", &data), "<no value>");
        assert_eq!(
            render(
                "{{/* c */}}x{{ if .Missing }}y{{ else if .Prompt }}z{{ end }}",
                &data
            ),
            "xz"
        );
        // `{{-3}}` is a number, not a trim marker.
        assert_eq!(render("a {{-3}}", &data), "a -3");
    }

    #[test]
    fn ranges_with_last_detection() {
        let data = GoValue::Map(BTreeMap::from([(
            "Messages".into(),
            GoValue::List(vec![msg("user", "u"), msg("assistant", "a")]),
        )]));
        let t = r#"{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}[{{ $i }}:{{ .Role }}={{ .Content }}{{ if $last }}!{{ end }}]{{ end }}"#;
        assert_eq!(render(t, &data), "[0:user=u][1:assistant=a!]");
        assert_eq!(
            render(r#"{{ (index .Messages 1).Role }}"#, &data),
            "assistant"
        );
        assert_eq!(
            render(
                r#"{{ if and (eq 1 1) (ne "a" "b") (not false) }}y{{ end }}"#,
                &data
            ),
            "y"
        );
    }

    #[test]
    fn rejects_what_it_cannot_do() {
        assert!(GoTemplate::parse("{{ if .A }}").is_err());
        assert!(GoTemplate::parse("{{ end }}").is_err());
        assert!(GoTemplate::parse("{{ .A ").is_err());
        let t = GoTemplate::parse("{{ printf \"%s\" .A }}").unwrap();
        assert!(t.execute(&GoValue::Nil).is_err());
        let t = GoTemplate::parse(r#"{{ eq 1 "a" }}"#).unwrap();
        assert!(t.execute(&GoValue::Nil).is_err());
    }
}
