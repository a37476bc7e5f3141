//! The shape every aggregate and workflow step shares: pure `decide` and `evolve` functions over
//! an explicit state, so that the command handler (the shell) owns all I/O.

/// An aggregate as three plain functions. Implementations are unit structs; the trait only ties the
/// associated types together so the shell and the tests can be written once.
pub trait Decider {
    type State: Default + Clone;
    type Command;
    type Event: Clone;
    type Error;

    /// Turns a command into the events it causes, or the rule it breaks. An empty list is an
    /// accepted no-op (moving to the stage a deal is already in, for example).
    fn decide(
        command: &Self::Command,
        state: &Self::State,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state. Events are facts: this never rejects one.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self::State
    where
        Self::Event: 'a,
    {
        events
            .into_iter()
            .fold(Self::State::default(), |state, event| {
                Self::evolve(state, event)
            })
    }
}
