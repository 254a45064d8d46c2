// What a C++ program asks of its runtime, each checked and printed on a line of its own:
// exceptions (thrown and caught in threads, carried across them by std::future, rethrown,
// nested), iostreams, threads with mutexes and condition variables, thread_local objects
// with destructors, static initialisation and destruction, RTTI and dynamic_cast; and of
// the compiler's runtime library, a 128-bit division (__divti3).
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <typeinfo>
#include <vector>

namespace {

std::atomic<int> destroyed_locals{0};

struct PerThread {
    int uses = 0;
    ~PerThread() { destroyed_locals += 1; }
};
thread_local PerThread per_thread;

struct Global {
    std::map<std::string, int> table{{"one", 1}, {"two", 2}};
    ~Global() { std::cout << "static destructor ran" << std::endl; }
};
Global global;

struct Base { virtual ~Base() = default; };
struct Derived : Base { int value = 42; };

int checked_divide(int a, int b) {
    if (b == 0) throw std::domain_error("division by zero");
    return a / b;
}

}  // namespace

int main() {
    // exceptions inside threads, counted under a mutex
    std::mutex lock;
    int caught = 0, done = 0;
    std::vector<std::thread> workers;
    for (int i = 0; i < 8; ++i) {
        workers.emplace_back([&, i] {
            per_thread.uses += 1;
            try {
                checked_divide(i, i % 2);
            } catch (const std::domain_error&) {
                std::lock_guard<std::mutex> guard(lock);
                ++caught;
            }
            std::lock_guard<std::mutex> guard(lock);
            ++done;
        });
    }
    for (auto& w : workers) w.join();
    std::cout << "threads: " << done << " ran, " << caught << " caught" << std::endl;
    std::cout << "thread_local destructors: " << destroyed_locals.load() << std::endl;

    // an exception carried from one thread to another by a future
    auto failing = std::async(std::launch::async, [] { return checked_divide(1, 0); });
    try {
        failing.get();
    } catch (const std::exception& e) {
        std::cout << "future: " << typeid(e).name() << " " << e.what() << std::endl;
    }

    // a producer and a consumer on a condition variable
    std::condition_variable ready;
    std::vector<int> queue;
    bool finished = false;
    std::thread producer([&] {
        for (int i = 1; i <= 100; ++i) {
            std::lock_guard<std::mutex> guard(lock);
            queue.push_back(i);
            ready.notify_one();
        }
        std::lock_guard<std::mutex> guard(lock);
        finished = true;
        ready.notify_one();
    });
    long sum = 0;
    for (;;) {
        std::unique_lock<std::mutex> held(lock);
        ready.wait(held, [&] { return !queue.empty() || finished; });
        for (int v : queue) sum += v;
        queue.clear();
        if (finished) break;
    }
    producer.join();
    std::cout << "condition variable: sum " << sum << std::endl;

    // nested exceptions, rethrown
    try {
        try {
            throw std::runtime_error("inner");
        } catch (...) {
            std::throw_with_nested(std::logic_error("outer"));
        }
    } catch (const std::logic_error& e) {
        try {
            std::rethrow_if_nested(e);
        } catch (const std::runtime_error& inner) {
            std::cout << "nested: " << e.what() << " <- " << inner.what() << std::endl;
        }
    }

    // iostreams and RTTI
    std::ostringstream out;
    out << std::hex << 255 << " " << std::dec << global.table["two"] << " " << 1.5;
    std::istringstream in("7 8 9");
    int a = 0, b = 0, c = 0;
    in >> a >> b >> c;
    std::unique_ptr<Base> object = std::make_unique<Derived>();
    auto* derived = dynamic_cast<Derived*>(object.get());
    std::cout << "iostreams: " << out.str() << " | " << a + b + c << std::endl;
    std::cout << "rtti: " << (derived ? derived->value : -1) << std::endl;

    // no instruction divides 128 bits: the runtime library does
    volatile __int128 big = static_cast<__int128>(1) << 100;
    volatile __int128 by = 3;
    std::cout << "int128: " << static_cast<long long>((big / by) >> 64) << std::endl;
    return EXIT_SUCCESS;
}
