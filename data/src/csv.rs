//! Numeric CSV files (optionally gzip-compressed).
//!
//! Every row becomes one example with a `features` field (`f32`, one value
//! per feature column) and, if a label column is chosen, a `label` field
//! (`i32` scalar). Fields may be double-quoted (RFC 4180 style, without
//! embedded newlines). Every row must have the same number of columns; a
//! row that does not, or a cell that is not a number, is a
//! [`DataError::Parse`] naming the file and line.

use std::borrow::Cow;
use std::path::Path;

use crate::dataset::{ArrayDataset, Dataset};
use crate::error::{DataError, Result};
use crate::example::Example;
use crate::gzip::read_maybe_gzip;
use crate::tensor::HostTensor;

/// Selects a column of a CSV file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Column {
    /// By 0-based position.
    Index(usize),
    /// By header name (requires a header).
    Name(String),
    /// The last column.
    Last,
}

impl From<usize> for Column {
    fn from(i: usize) -> Self {
        Column::Index(i)
    }
}

impl From<&str> for Column {
    fn from(name: &str) -> Self {
        Column::Name(name.to_string())
    }
}

/// How to read a CSV file. Build with [`CsvOptions::new`] and the builder
/// methods.
#[derive(Clone, Debug)]
pub struct CsvOptions {
    /// Lines to skip before anything else (e.g. 1 for scikit-learn's
    /// `150,4,setosa,...` preamble).
    pub skip_rows: usize,
    /// Whether the first (non-skipped) line holds column names.
    pub has_header: bool,
    /// Field separator.
    pub delimiter: u8,
    /// The label column, if any.
    pub label: Option<Column>,
    /// Labels must lie in `0..num_classes`, if set.
    pub num_classes: Option<usize>,
    /// Feature columns; `None` means every column except the label.
    pub features: Option<Vec<Column>>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            skip_rows: 0,
            has_header: false,
            delimiter: b',',
            label: None,
            num_classes: None,
            features: None,
        }
    }
}

impl CsvOptions {
    /// Defaults: no header, comma-separated, no label, all columns are features.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`has_header`](Self::has_header).
    #[must_use]
    pub fn header(mut self, has_header: bool) -> Self {
        self.has_header = has_header;
        self
    }

    /// Sets [`skip_rows`](Self::skip_rows).
    #[must_use]
    pub fn skip_rows(mut self, n: usize) -> Self {
        self.skip_rows = n;
        self
    }

    /// Sets [`delimiter`](Self::delimiter).
    #[must_use]
    pub fn delimiter(mut self, delimiter: u8) -> Self {
        self.delimiter = delimiter;
        self
    }

    /// Sets the label column.
    #[must_use]
    pub fn label(mut self, column: impl Into<Column>) -> Self {
        self.label = Some(column.into());
        self
    }

    /// Sets [`num_classes`](Self::num_classes).
    #[must_use]
    pub fn num_classes(mut self, k: usize) -> Self {
        self.num_classes = Some(k);
        self
    }

    /// Sets explicit feature columns.
    #[must_use]
    pub fn features(mut self, columns: impl IntoIterator<Item = Column>) -> Self {
        self.features = Some(columns.into_iter().collect());
        self
    }
}

/// Splits one CSV line into fields, honouring double quotes.
fn split_fields(line: &str, delim: char) -> std::result::Result<Vec<Cow<'_, str>>, String> {
    if !line.contains('"') {
        return Ok(line.split(delim).map(Cow::Borrowed).collect());
    }
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(Cow::Owned(field));
                    return Ok(fields);
                }
                Some(c) if c == delim => fields.push(Cow::Owned(field)),
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(Cow::Owned(field));
                        return Ok(fields);
                    }
                    Some(c) if c == delim => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(Cow::Owned(field));
        }
    }
}

fn resolve(
    column: &Column,
    names: Option<&[String]>,
    ncols: usize,
) -> std::result::Result<usize, String> {
    match column {
        Column::Index(i) if *i < ncols => Ok(*i),
        Column::Index(i) => Err(format!("column {i} does not exist ({ncols} columns)")),
        Column::Last if ncols > 0 => Ok(ncols - 1),
        Column::Last => Err("there are no columns".into()),
        Column::Name(name) => names
            .ok_or_else(|| format!("column {name:?} selected by name but the file has no header"))?
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| format!("no column named {name:?}")),
    }
}

fn parse_label(cell: &str) -> Option<i64> {
    let cell = cell.trim();
    cell.parse::<i64>().ok().or_else(|| {
        let x = cell.parse::<f64>().ok()?;
        (x.fract() == 0.0 && x.abs() < 9.0e15).then_some(x as i64)
    })
}

/// A CSV file loaded into memory (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct CsvDataset {
    inner: ArrayDataset,
    column_names: Option<Vec<String>>,
    feature_columns: Vec<usize>,
    label_column: Option<usize>,
}

impl CsvDataset {
    /// Reads and parses `path` (gzip detected by magic bytes).
    pub fn open(path: impl AsRef<Path>, options: &CsvOptions) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_maybe_gzip(path)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
            DataError::parse(path, line, "invalid UTF-8")
        })?;
        Self::parse(text, path, options)
    }

    /// Parses CSV text; `path` names the source in errors.
    pub fn parse(text: &str, path: &Path, options: &CsvOptions) -> Result<Self> {
        let delim = char::from(options.delimiter);
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .skip(options.skip_rows)
            .filter(|(_, l)| !l.trim().is_empty());

        let mut column_names = None;
        let mut ncols = None;
        if options.has_header
            && let Some((line_no, line)) = lines.next()
        {
            let names: Vec<String> = split_fields(line, delim)
                .map_err(|m| DataError::parse(path, line_no, m))?
                .iter()
                .map(|s| s.trim().to_string())
                .collect();
            ncols = Some(names.len());
            column_names = Some(names);
        }

        let mut features = Vec::new();
        let mut labels = Vec::new();
        let mut rows = 0usize;
        let mut plan: Option<(Vec<usize>, Option<usize>)> = None;
        for (line_no, line) in lines {
            let cells =
                split_fields(line, delim).map_err(|m| DataError::parse(path, line_no, m))?;
            let n = *ncols.get_or_insert(cells.len());
            if cells.len() != n {
                return Err(DataError::parse(
                    path,
                    line_no,
                    format!("expected {n} column(s), found {}", cells.len()),
                ));
            }
            let (feature_cols, label_col) = match &plan {
                Some(p) => p,
                None => {
                    let names = column_names.as_deref();
                    let err = |m: String| DataError::parse(path, line_no, m);
                    let label_col = options
                        .label
                        .as_ref()
                        .map(|c| resolve(c, names, n))
                        .transpose()
                        .map_err(err)?;
                    let feature_cols = match &options.features {
                        Some(cols) => cols
                            .iter()
                            .map(|c| resolve(c, names, n))
                            .collect::<std::result::Result<Vec<_>, _>>()
                            .map_err(err)?,
                        None => (0..n).filter(|&c| Some(c) != label_col).collect(),
                    };
                    plan.insert((feature_cols, label_col))
                }
            };
            for &c in feature_cols.iter() {
                let cell = cells[c].trim();
                let value = cell.parse::<f32>().map_err(|_| {
                    DataError::parse(
                        path,
                        line_no,
                        format!("column {}: {cell:?} is not a number", c + 1),
                    )
                })?;
                features.push(value);
            }
            if let Some(c) = *label_col {
                let cell = cells[c].trim();
                let label = parse_label(cell).ok_or_else(|| {
                    DataError::parse(
                        path,
                        line_no,
                        format!("column {}: label {cell:?} is not an integer", c + 1),
                    )
                })?;
                let limit = options.num_classes.map_or(i64::from(i32::MAX), |k| k as i64);
                if label < 0 || label >= limit {
                    return Err(DataError::LabelOutOfRange {
                        label,
                        num_classes: options.num_classes.unwrap_or(i32::MAX as usize),
                        context: format!("{}:{line_no}, column {}", path.display(), c + 1),
                    });
                }
                labels.push(label as i32);
            }
            rows += 1;
        }

        let (feature_columns, label_column) = plan.unwrap_or_default();
        let mut fields =
            vec![("features", HostTensor::from_vec(vec![rows, feature_columns.len()], features)?)];
        if label_column.is_some() || (rows == 0 && options.label.is_some()) {
            fields.push(("label", HostTensor::from_vec(vec![rows], labels)?));
        }
        Ok(CsvDataset {
            inner: ArrayDataset::new(fields)?,
            column_names,
            feature_columns,
            label_column,
        })
    }

    /// Header names, if the file had a header.
    pub fn column_names(&self) -> Option<&[String]> {
        self.column_names.as_deref()
    }

    /// Number of feature columns.
    pub fn num_features(&self) -> usize {
        self.feature_columns.len()
    }

    /// Positions of the feature columns.
    pub fn feature_columns(&self) -> &[usize] {
        &self.feature_columns
    }

    /// Position of the label column, if any.
    pub fn label_column(&self) -> Option<usize> {
        self.label_column
    }

    /// The whole table as an [`ArrayDataset`] (`features` `[N, F]`, `label` `[N]`).
    pub fn as_arrays(&self) -> &ArrayDataset {
        &self.inner
    }
}

impl Dataset for CsvDataset {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn get(&self, index: usize) -> Result<Example> {
        self.inner.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_quoted_fields() {
        let f = split_fields(r#""a,b",2,"say ""hi""""#, ',').unwrap();
        assert_eq!(f, vec!["a,b", "2", "say \"hi\""]);
        assert_eq!(split_fields("1;2;", ';').unwrap(), vec!["1", "2", ""]);
        assert!(split_fields("\"open", ',').is_err());
        assert!(split_fields("\"a\"b", ',').is_err());
    }

    #[test]
    fn labels_accept_integral_floats_only() {
        assert_eq!(parse_label(" 3 "), Some(3));
        assert_eq!(parse_label("2.0"), Some(2));
        assert_eq!(parse_label("2.5"), None);
        assert_eq!(parse_label("x"), None);
    }
}
