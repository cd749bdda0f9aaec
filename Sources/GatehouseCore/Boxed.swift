/// A value behind a reference, for keeping a closure in a `Mutex`.
///
/// A closure kept directly in a `Mutex` is re-abstracted on every `withLock`: its `inout` goes
/// through the generic and is written back wrapped in two more thunks, so each later call
/// runs through a longer chain (the event log's hand-off spent 40 % of the server's CPU in it
/// after 150,000 commits, and a chain grown long enough overflows the stack). A reference is
/// passed as it is.
public final class Boxed<Value: Sendable>: Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}
