//! Listings: one page at a time, or an iterator that follows cursors.

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::raw;

/// One listed record. In keys-only listings `value` and `metadata` are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value as JSON text.
    pub value: Option<String>,
    /// The metadata as JSON text.
    pub metadata: Option<String>,
    /// The record's revision.
    pub revision: u64,
    /// The schema version the value was validated against.
    pub schema_version: Option<u32>,
    /// Expiry in milliseconds since the Unix epoch.
    pub expires_at_ms: Option<u64>,
    /// When the key was created, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// When the record was last written, in milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

impl Entry {
    /// The value deserialised as `T`; `None` in keys-only listings.
    pub fn value<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        self.value
            .as_deref()
            .map(|text| {
                serde_json::from_str(text).map_err(|e| Error::Decode {
                    key: self.key.clone(),
                    message: e.to_string(),
                })
            })
            .transpose()
    }
}

impl From<raw::Entry> for Entry {
    fn from(e: raw::Entry) -> Self {
        Entry {
            key: e.key,
            value: e.value,
            metadata: e.metadata,
            revision: e.revision,
            schema_version: e.schema_version,
            expires_at_ms: e.expires_at_ms,
            created_at_ms: e.created_at_ms,
            updated_at_ms: e.updated_at_ms,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Entries in byte order of keys.
    pub entries: Vec<Entry>,
    /// Pass to [`List::page`] for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// A listing of one namespace, in byte order of keys.
#[derive(Debug, Clone)]
pub struct List {
    namespace: String,
    prefix: Option<String>,
    page_size: Option<u32>,
    keys_only: bool,
}

impl List {
    pub(crate) fn new(namespace: String) -> Self {
        Self {
            namespace,
            prefix: None,
            page_size: None,
            keys_only: false,
        }
    }

    /// Only keys starting with `prefix` (literally: `%`, `_` and `\` are plain characters).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Entries per page, 1 to 1000 (default 100).
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = Some(size);
        self
    }

    /// Return keys and revisions without values.
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }

    /// Fetches the page after `cursor` (`None` for the first).
    pub fn page(&self, cursor: Option<&str>) -> Result<Page, Error> {
        let options = raw::ListOptions {
            prefix: self.prefix.clone(),
            cursor: cursor.map(str::to_owned),
            limit: self.page_size,
            keys_only: self.keys_only,
        };
        let page = raw::list(&self.namespace, &options)?;
        Ok(Page {
            entries: page.entries.into_iter().map(Entry::from).collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// Iterates over every entry, fetching pages as needed; stops after the first error.
    pub fn iter(&self) -> ListIter<'_> {
        ListIter {
            list: self,
            buffer: Vec::new().into_iter(),
            cursor: None,
            done: false,
        }
    }
}

/// Iterator over a listing; see [`List::iter`].
#[derive(Debug)]
pub struct ListIter<'a> {
    list: &'a List,
    buffer: std::vec::IntoIter<Entry>,
    cursor: Option<String>,
    done: bool,
}

impl Iterator for ListIter<'_> {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.buffer.next() {
                return Some(Ok(entry));
            }
            if self.done {
                return None;
            }
            match self.list.page(self.cursor.as_deref()) {
                Ok(page) => {
                    self.done = page.next_cursor.is_none();
                    self.cursor = page.next_cursor;
                    self.buffer = page.entries.into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
