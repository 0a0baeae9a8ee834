// Crashes through namespaced, templated and anonymous-namespace C++
// functions: main -> store::detail::run -> (anonymous namespace)::fetch<int>
// -> store::Box<int>::get, which reads through a NULL pointer.
#include <cstdio>

namespace store {

template <class T>
struct Box {
    T *p;

    __attribute__((noinline)) T get() const
    {
        return *p; // CRASH-LINE
    }
};

} // namespace store

namespace {

template <class T>
__attribute__((noinline)) T fetch(const store::Box<T> &box, T bias)
{
    return box.get() + bias;
}

} // namespace

namespace store {
namespace detail {

__attribute__((noinline)) int run(int *pointer)
{
    Box<int> box{pointer};
    return fetch(box, 1);
}

} // namespace detail
} // namespace store

int main()
{
    std::printf("%d\n", store::detail::run(nullptr));
    return 0;
}
