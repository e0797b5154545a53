#if canImport(Glibc) || canImport(Musl)
    import Dispatch
    import Synchronization
    import SystemLibrary
    #if canImport(Glibc)
        import Glibc
    #else
        import Musl
    #endif

    /// A persistent pool of `width − 1` worker threads; the calling thread is worker 0.
    ///
    /// `DispatchQueue.concurrentPerform` wakes threads of a shared pool on every call, which
    /// costs tens of microseconds on Linux: as much as a whole pass over a 1 MB tensor. These
    /// workers spin briefly after each job (back-to-back kernels such as *collect* then
    /// *apply* find them awake) and then sleep on a condition variable, so an idle pool uses
    /// no CPU. One pool exists per width and is shared by every ``CPUBackend`` of that width;
    /// a caller that finds the pool busy (another thread is running a job on it) falls back to
    /// `concurrentPerform`, so concurrent callers are safe.
    final class WorkerPool: @unchecked Sendable {
        /// Threads taking part in each job, the caller included.
        let width: Int

        private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        private let wakeCondition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        private let doneCondition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        private let isBusy = Atomic<Bool>(false)
        /// Incremented (under `mutex`) to publish a job.
        private let generation = Atomic<Int>(0)
        /// Workers that have not yet finished the current job.
        private let remaining = Atomic<Int>(0)
        /// The current job; written before `generation` is published, read by workers after.
        private nonisolated(unsafe) var job: (@Sendable (Int) -> Void)?

        /// Spin iterations before a waiting thread sleeps (a few tens of microseconds).
        private static let spinLimit = 20_000

        private init(width: Int) {
            self.width = width
            pthread_mutex_init(mutex, nil)
            pthread_cond_init(wakeCondition, nil)
            pthread_cond_init(doneCondition, nil)
            for worker in 1..<width { spawn(worker) }
        }

        /// The pools by width, under `poolsLock` (a pthread mutex, which ThreadSanitizer
        /// understands; it reported the futex-based `Mutex` here when two tests created pools
        /// at once).
        private static nonisolated(unsafe) var pools = [Int: WorkerPool]()
        private static let poolsLock = Lock()

        /// The shared pool of `width` threads (`width >= 2`); pools live for the whole process.
        static func shared(width: Int) -> WorkerPool {
            poolsLock.withLock {
                if let pool = pools[width] { return pool }
                let pool = WorkerPool(width: width)
                pools[width] = pool
                return pool
            }
        }

        /// Runs `body(0)` … `body(width − 1)` concurrently and returns when all have finished.
        func run(_ body: @Sendable (Int) -> Void) {
            guard isBusy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
                // Another thread owns the pool right now.
                DispatchQueue.concurrentPerform(iterations: width) { body($0) }
                return
            }
            withoutActuallyEscaping(body) { body in
                job = body
                remaining.store(width - 1, ordering: .relaxed)
                pthread_mutex_lock(mutex)
                generation.add(1, ordering: .releasing)
                pthread_cond_broadcast(wakeCondition)
                pthread_mutex_unlock(mutex)

                body(0)

                var spins = 0
                while remaining.load(ordering: .acquiring) != 0 {
                    spins += 1
                    if spins >= WorkerPool.spinLimit {
                        pthread_mutex_lock(mutex)
                        while remaining.load(ordering: .acquiring) != 0 { pthread_cond_wait(doneCondition, mutex) }
                        pthread_mutex_unlock(mutex)
                    }
                }
                job = nil
            }
            isBusy.store(false, ordering: .releasing)
        }

        private func spawn(_ worker: Int) {
            final class Context {
                let pool: WorkerPool
                let worker: Int
                init(_ p: WorkerPool, _ w: Int) {
                    pool = p
                    worker = w
                }
            }
            let context = Unmanaged.passRetained(Context(self, worker)).toOpaque()
            var thread = pthread_t()
            let status = pthread_create(
                &thread, nil,
                { raw in
                    let context = Unmanaged<Context>.fromOpaque(raw!).takeRetainedValue()
                    context.pool.workerLoop(context.worker)
                }, context)
            precondition(status == 0, "BatchNormKit: cannot start a worker thread (pthread_create returned \(status))")
            pthread_detach(thread)
        }

        private func workerLoop(_ worker: Int) -> Never {
            var seen = 0
            while true {
                var spins = 0
                var current = generation.load(ordering: .acquiring)
                while current == seen {
                    spins += 1
                    if spins >= WorkerPool.spinLimit {
                        pthread_mutex_lock(mutex)
                        while generation.load(ordering: .acquiring) == seen { pthread_cond_wait(wakeCondition, mutex) }
                        pthread_mutex_unlock(mutex)
                    }
                    current = generation.load(ordering: .acquiring)
                }
                seen = current
                job!(worker)
                if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
                    pthread_mutex_lock(mutex)
                    pthread_cond_signal(doneCondition)
                    pthread_mutex_unlock(mutex)
                }
            }
        }
    }
#endif
