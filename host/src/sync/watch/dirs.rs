//! The watched folders of one tree as inotify knows them: each watch descriptor's folder is
//! kept as (parent's descriptor, name), never as a full path, so a folder renamed inside the
//! tree costs one update however much lies below it, and a path is rebuilt from the parents
//! only when an event needs it.
//!
//! Must never: hand out a path for a descriptor it no longer knows (a folder deleted, or moved
//! out of the tree), or keep a kernel watch on a folder that left the tree.

use std::collections::{BTreeMap, HashMap};

use inotify::WatchDescriptor;

/// A watched folder: where it hangs in the tree.
#[derive(Debug)]
struct Node {
    /// `None` for the root.
    parent: Option<WatchDescriptor>,
    name: Box<[u8]>,
}

/// The tree of watched folders, by watch descriptor.
#[derive(Debug, Default)]
pub struct WatchedDirs {
    nodes: HashMap<WatchDescriptor, Node>,
    /// (parent, name) -> child: a folder's subfolders form one run, for moves out of the tree.
    children: BTreeMap<(i32, Box<[u8]>), WatchDescriptor>,
}

impl WatchedDirs {
    /// Number of watched folders, the root included.
    pub fn count(&self) -> usize {
        self.nodes.len()
    }

    /// True when `wd` is a known folder.
    pub fn contains(&self, wd: &WatchDescriptor) -> bool {
        self.nodes.contains_key(wd)
    }

    /// Every known descriptor.
    pub fn descriptors(&self) -> impl Iterator<Item = &WatchDescriptor> {
        self.nodes.keys()
    }

    /// Takes in `other`'s folders (two sets of leftovers to clean up together); where both
    /// know a descriptor, this one's entry stays.
    pub fn absorb(&mut self, other: WatchedDirs) {
        for (wd, node) in other.nodes {
            self.nodes.entry(wd).or_insert(node);
        }
    }

    /// Records the root's watch.
    pub fn set_root(&mut self, wd: WatchDescriptor) {
        self.nodes.insert(wd, Node { parent: None, name: Box::default() });
    }

    /// Records folder `name` under `parent` as watched by `wd`. False when `wd` is already
    /// known elsewhere (the same folder reached twice, e.g. through a bind mount): the caller
    /// must not walk it again.
    pub fn add(&mut self, parent: &WatchDescriptor, name: &[u8], wd: WatchDescriptor) -> bool {
        if self.nodes.contains_key(&wd) {
            return false;
        }
        let key = (parent.get_watch_descriptor_id(), Box::from(name));
        self.children.insert(key, wd.clone());
        self.nodes.insert(wd, Node { parent: Some(parent.clone()), name: Box::from(name) });
        true
    }

    /// True when `wd` is filed as folder `name` of `parent`.
    pub fn is_at(&self, wd: &WatchDescriptor, parent: &WatchDescriptor, name: &[u8]) -> bool {
        self.nodes.get(wd).is_some_and(|n| n.parent.as_ref() == Some(parent) && *n.name == *name)
    }

    /// The watched subfolder `name` of `parent`, if any.
    pub fn child(&self, parent: &WatchDescriptor, name: &[u8]) -> Option<&WatchDescriptor> {
        self.children.get(&(parent.get_watch_descriptor_id(), Box::from(name)))
    }

    /// Folder `from_name` of `from` is now `to_name` of `to` (a rename inside the tree).
    pub fn rename(&mut self, wd: &WatchDescriptor, to: &WatchDescriptor, to_name: &[u8]) {
        let Some(node) = self.nodes.get_mut(wd) else { return };
        if let Some(old_parent) = &node.parent {
            self.children.remove(&(old_parent.get_watch_descriptor_id(), std::mem::take(&mut node.name)));
        }
        node.parent = Some(to.clone());
        node.name = Box::from(to_name);
        // A folder replaced by the rename has left the tree already (its own events say so).
        self.children.insert((to.get_watch_descriptor_id(), Box::from(to_name)), wd.clone());
    }

    /// Forgets `wd` and every folder below it; returns their descriptors, for the caller to
    /// remove the kernel watches of a subtree that left the tree.
    pub fn remove_subtree(&mut self, wd: &WatchDescriptor) -> Vec<WatchDescriptor> {
        let mut gone = Vec::new();
        let mut todo = vec![wd.clone()];
        while let Some(w) = todo.pop() {
            let Some(node) = self.nodes.remove(&w) else { continue };
            if let Some(parent) = &node.parent {
                let key = (parent.get_watch_descriptor_id(), node.name);
                if self.children.get(&key) == Some(&w) {
                    self.children.remove(&key);
                }
            }
            let id = w.get_watch_descriptor_id();
            let below: Vec<(i32, Box<[u8]>)> = self
                .children
                .range((id, Box::default())..)
                .take_while(|(k, _)| k.0 == id)
                .map(|(k, _)| k.clone())
                .collect();
            for k in below {
                if let Some(child) = self.children.remove(&k) {
                    todo.push(child);
                }
            }
            gone.push(w);
        }
        gone
    }

    /// The path of `name` in folder `wd` relative to the root (`name` empty: the folder
    /// itself; the root is the empty path). `None` for an unknown descriptor.
    pub fn path(&self, wd: &WatchDescriptor, name: &[u8]) -> Option<Vec<u8>> {
        let mut parts: Vec<&[u8]> = Vec::new();
        if !name.is_empty() {
            parts.push(name);
        }
        let mut at = self.nodes.get(wd)?;
        while let Some(parent) = &at.parent {
            parts.push(&at.name);
            at = self.nodes.get(parent)?;
        }
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
        for (i, part) in parts.iter().rev().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(part);
        }
        Some(out)
    }
}
