//! The flame graph's data: a profile's stacks merged into one tree of frames, root (all
//! samples) to leaves, either callees above callers (the flame graph) or callers above callees
//! (the reversed view, rooted at the functions where the CPU was).
//!
//! This module owns merging and pruning; drawing is `super::svg`'s. Two frames merge when they
//! have the same parent, name and class, so a kernel and a user function of the same name stay
//! apart.

use std::collections::HashMap;
use std::sync::Arc;

use crate::profile::{Frame, FrameKind, Profile};

/// What kind of code a node stands for; the flame graph colours each differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// The root ("all") and the thread names under it.
    Meta,
    Kernel,
    User,
    /// A function inlined into its caller (`Frame::inlined`).
    Inlined,
    Python,
}

impl Class {
    pub fn of(frame: &Frame) -> Class {
        match frame.kind {
            FrameKind::Kernel => Class::Kernel,
            FrameKind::Python => Class::Python,
            FrameKind::Native if frame.inlined => Class::Inlined,
            FrameKind::Native => Class::User,
        }
    }

    /// The CSS class name of nodes of this class.
    pub fn css(self) -> &'static str {
        match self {
            Class::Meta => "m",
            Class::Kernel => "k",
            Class::User => "u",
            Class::Inlined => "i",
            Class::Python => "p",
        }
    }
}

/// One frame of the tree: the samples of every stack that reached it by the same path.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: Arc<str>,
    pub class: Class,
    /// Samples of stacks through this node.
    pub total: u64,
    /// Samples of stacks ending here.
    pub own: u64,
    pub depth: u32,
    pub children: Vec<usize>,
}

/// Which way stacks are merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Root, thread, outermost caller ... leaf: a flame graph.
    Callees,
    /// Root, leaf function, its caller ... thread: who calls the hot functions.
    Callers,
}

/// The merged stacks. Node 0 is the root.
#[derive(Clone, Debug)]
pub struct Tree {
    pub nodes: Vec<Node>,
    index: HashMap<(usize, Arc<str>, Class), usize>,
}

/// The root's name.
pub const ROOT: &str = "all";

impl Tree {
    fn empty() -> Tree {
        Tree {
            nodes: vec![Node {
                name: ROOT.into(),
                class: Class::Meta,
                total: 0,
                own: 0,
                depth: 0,
                children: Vec::new(),
            }],
            index: HashMap::new(),
        }
    }

    /// Merges every stack of `profile`, the thread name as the outermost frame.
    pub fn build(profile: &Profile, direction: Direction) -> Tree {
        let mut tree = Tree::empty();
        let mut path: Vec<(Arc<str>, Class)> = Vec::new();
        for sample in profile.samples.iter().filter(|s| s.count > 0) {
            path.clear();
            let thread: Arc<str> = match sample.thread_name.as_str() {
                "" => "[unknown]".into(),
                name => name.into(),
            };
            path.push((thread, Class::Meta));
            path.extend(
                sample
                    .frames
                    .iter()
                    .rev()
                    .map(|f| (f.function.clone(), Class::of(f))),
            );
            if direction == Direction::Callers {
                path.reverse();
            }
            tree.add(&path, sample.count);
        }
        tree
    }

    /// Adds one stack (outermost first) sampled `count` times.
    fn add(&mut self, path: &[(Arc<str>, Class)], count: u64) {
        let mut at = 0;
        self.nodes[0].total = self.nodes[0].total.saturating_add(count);
        for (name, class) in path {
            at = self.child_or_new(at, name, *class);
            let node = &mut self.nodes[at];
            node.total = node.total.saturating_add(count);
        }
        let leaf = &mut self.nodes[at];
        leaf.own = leaf.own.saturating_add(count);
    }

    fn child_or_new(&mut self, parent: usize, name: &Arc<str>, class: Class) -> usize {
        let key = (parent, name.clone(), class);
        if let Some(&child) = self.index.get(&key) {
            return child;
        }
        let child = self.nodes.len();
        let depth = self.nodes[parent].depth + 1;
        self.nodes.push(Node {
            name: name.clone(),
            class,
            total: 0,
            own: 0,
            depth,
            children: Vec::new(),
        });
        self.nodes[parent].children.push(child);
        self.index.insert(key, child);
        child
    }

    /// The child of `parent` named `name` of `class`, if any.
    pub fn child(&self, parent: usize, name: &Arc<str>, class: Class) -> Option<usize> {
        self.index.get(&(parent, name.clone(), class)).copied()
    }

    /// For every node of `self`, the node of `other` reached by the same path (`None` where
    /// `other` never took that path). Used by the differential graph.
    pub fn match_in(&self, other: &Tree) -> Vec<Option<usize>> {
        let mut matched = vec![None; self.nodes.len()];
        matched[0] = Some(0);
        // Children always come after their parent, so one pass in index order suffices.
        for (at, node) in self.nodes.iter().enumerate() {
            let Some(there) = matched[at] else { continue };
            for &child in &node.children {
                let c = &self.nodes[child];
                matched[child] = other.child(there, &c.name, c.class);
            }
        }
        matched
    }

    pub fn total(&self) -> u64 {
        self.nodes[0].total
    }

    /// Visits the nodes at least `min_total` samples wide, parents before children, widest
    /// child first, with each node's offset (in samples) from the left edge. Returns how many
    /// nodes were left out as too narrow and how many samples they held (their children are
    /// not counted again).
    pub fn visit_wide(&self, min_total: u64, mut visit: impl FnMut(usize, u64)) -> (u64, u64) {
        let (mut dropped, mut dropped_samples) = (0, 0);
        let mut stack = vec![(0usize, 0u64)];
        while let Some((at, x)) = stack.pop() {
            visit(at, x);
            let mut children = self.nodes[at].children.clone();
            children.sort_by(|&a, &b| {
                let (a, b) = (&self.nodes[a], &self.nodes[b]);
                a.name.cmp(&b.name).then(a.class.css().cmp(b.class.css()))
            });
            let mut offset = x;
            let mut keep = Vec::with_capacity(children.len());
            for child in children {
                let total = self.nodes[child].total;
                if total >= min_total.max(1) {
                    keep.push((child, offset));
                } else {
                    dropped += 1;
                    dropped_samples += total;
                }
                offset += total;
            }
            stack.extend(keep.into_iter().rev());
        }
        (dropped, dropped_samples)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::profile::{Module, StackSample};

    fn frame(name: &str, kind: FrameKind) -> Frame {
        let module = Arc::new(Module {
            path: "/bin/x".into(),
            build_id: None,
        });
        Frame::new(kind, name.into(), Some(module), 1)
    }

    /// `stacks` are root-to-leaf names of user frames, thread `t`.
    pub(crate) fn profile(stacks: &[(&[&str], u64)]) -> Profile {
        let samples = stacks
            .iter()
            .map(|(names, count)| StackSample {
                pid: 1,
                tid: 1,
                thread_name: "t".into(),
                frames: names
                    .iter()
                    .rev()
                    .map(|n| frame(n, FrameKind::Native))
                    .collect(),
                count: *count,
            })
            .collect();
        Profile {
            samples,
            ..Profile::default()
        }
    }

    fn names(tree: &Tree, at: usize) -> Vec<String> {
        tree.nodes[at]
            .children
            .iter()
            .map(|&c| format!("{}={}", tree.nodes[c].name, tree.nodes[c].total))
            .collect()
    }

    #[test]
    fn merges_common_prefixes() {
        let p = profile(&[(&["main", "a"], 3), (&["main", "b"], 2), (&["main"], 1)]);
        let tree = Tree::build(&p, Direction::Callees);
        assert_eq!(tree.total(), 6);
        assert_eq!(names(&tree, 0), ["t=6"]);
        assert_eq!(names(&tree, 1), ["main=6"]);
        assert_eq!(names(&tree, 2), ["a=3", "b=2"]);
        assert_eq!(tree.nodes[2].own, 1);
    }

    #[test]
    fn callers_view_starts_at_the_leaves() {
        let p = profile(&[(&["main", "a", "x"], 3), (&["main", "b", "x"], 2)]);
        let tree = Tree::build(&p, Direction::Callers);
        assert_eq!(names(&tree, 0), ["x=5"]);
        assert_eq!(names(&tree, 1), ["a=3", "b=2"]);
    }

    #[test]
    fn kernel_and_user_functions_of_one_name_stay_apart() {
        let mut p = profile(&[(&["f"], 1)]);
        p.samples[0].frames.insert(0, frame("f", FrameKind::Kernel));
        let tree = Tree::build(&p, Direction::Callees);
        let user = tree.nodes[1].children[0];
        assert_eq!(tree.nodes[user].class, Class::User);
        assert_eq!(
            tree.nodes[tree.nodes[user].children[0]].class,
            Class::Kernel
        );
    }

    #[test]
    fn narrow_nodes_are_dropped_and_counted() {
        let p = profile(&[
            (&["main", "a"], 1000),
            (&["main", "b"], 1),
            (&["main", "c"], 2),
        ]);
        let tree = Tree::build(&p, Direction::Callees);
        let mut seen = Vec::new();
        let dropped = tree.visit_wide(2, |at, x| seen.push((tree.nodes[at].name.to_string(), x)));
        assert_eq!(dropped, (1, 1));
        let names: Vec<_> = seen.iter().map(|(n, x)| format!("{n}@{x}")).collect();
        assert_eq!(names, ["all@0", "t@0", "main@0", "a@0", "c@1001"]);
    }

    #[test]
    fn matching_follows_paths() {
        let before = Tree::build(&profile(&[(&["main", "a"], 1)]), Direction::Callees);
        let after = Tree::build(
            &profile(&[(&["main", "b"], 1), (&["main", "a"], 1)]),
            Direction::Callees,
        );
        let matched = after.match_in(&before);
        let b = after.child(2, &"b".into(), Class::User).unwrap();
        assert_eq!(matched[b], None);
        let a = after.child(2, &"a".into(), Class::User).unwrap();
        assert_eq!(matched[a], Some(3));
    }
}
