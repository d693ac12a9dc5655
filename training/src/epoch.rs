//! The training epoch number, shared by the training set that accumulates an epoch and the
//! model learned in it (its own file so that neither imports the other).

/// A training epoch number. Starts wherever the caller likes; a new epoch is a new
/// [`crate::TrainingSet`].
pub type Epoch = u64;
