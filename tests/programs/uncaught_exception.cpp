// Throws exceptions nothing catches: std::terminate prints the type and
// what(), then abort(). The first argument picks a standard exception
// type, or the program's own.
#include <cstring>
#include <stdexcept>
#include <string>

namespace inventory {

struct StockError {
    int code;
};

void load_config(const char *path)
{
    throw std::runtime_error(std::string("config missing: ") + path); // CRASH-LINE
}

void reserve(int n)
{
    if (n > 0)
        throw StockError{n}; // thrown with "own"
}

} // namespace inventory

int main(int argc, char **argv)
{
    if (argc > 1 && std::strcmp(argv[1], "own") == 0)
        inventory::reserve(argc);
    inventory::load_config("/etc/inventory.toml");
    return 0;
}
