//! Merkle roots over ranges of the log, computed in one forward pass with O(log n) memory.
//!
//! The tree is the one of RFC 6962 (Certificate Transparency): leaves and inner nodes are hashed
//! with distinct prefixes (so a leaf can never pass for a node), and a range of `n` leaves splits
//! at the largest power of two below `n`. A leaf binds an event's global position to its
//! chain hash, and the chain hash covers the event's stream, version and every stored byte.

use sha2::{Digest, Sha256};

use crate::store::Hash;

/// The leaf of the event at `position` whose chain hash is `event_hash`.
pub fn leaf(position: u64, event_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(position.to_be_bytes());
    h.update(event_hash.0);
    Hash(h.finalize().into())
}

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// Builds the root of a sequence of leaves pushed in order.
#[derive(Debug, Default, Clone)]
pub struct MerkleBuilder {
    /// Roots of complete subtrees, largest first, with their heights.
    stack: Vec<(u32, Hash)>,
    leaves: u64,
}

impl MerkleBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, leaf: Hash) {
        self.leaves += 1;
        let mut height = 0;
        let mut hash = leaf;
        while let Some(&(h, left)) = self.stack.last() {
            if h != height {
                break;
            }
            self.stack.pop();
            hash = node(&left, &hash);
            height += 1;
        }
        self.stack.push((height, hash));
    }

    pub fn leaves(&self) -> u64 {
        self.leaves
    }

    /// The root of everything pushed so far (SHA-256 of nothing for an empty range).
    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        match iter.next() {
            None => Hash(Sha256::digest([]).into()),
            Some(&(_, last)) => iter.fold(last, |acc, (_, left)| node(left, &acc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962's recursive definition, as the reference.
    fn reference(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Hash(Sha256::digest([]).into()),
            1 => leaves[0],
            n => {
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                node(&reference(&leaves[..k]), &reference(&leaves[k..]))
            }
        }
    }

    #[test]
    fn streaming_root_equals_the_recursive_definition_for_every_size() {
        let leaves: Vec<Hash> = (1..=70u64).map(|p| leaf(p, &Hash([p as u8; 32]))).collect();
        for n in 0..=leaves.len() {
            let mut b = MerkleBuilder::new();
            for l in &leaves[..n] {
                b.push(*l);
            }
            assert_eq!(b.root(), reference(&leaves[..n]), "{n} leaves");
            assert_eq!(b.leaves(), n as u64);
        }
    }

    #[test]
    fn the_root_depends_on_every_leaf_and_its_place() {
        let leaves: Vec<Hash> = (1..=9u64).map(|p| leaf(p, &Hash([p as u8; 32]))).collect();
        let root = reference(&leaves);
        let mut swapped = leaves.clone();
        swapped.swap(3, 4);
        assert_ne!(reference(&swapped), root);
        assert_ne!(reference(&leaves[..8]), root);
        assert_ne!(leaf(1, &Hash([1; 32])), leaf(2, &Hash([1; 32])));
    }
}
