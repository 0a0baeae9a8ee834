// Throws exceptions nothing catches: std::terminate prints the type and
// what(), then abort(). The first argument picks a standard exception
// type, or one of the program's own: "own" (no base class), "config" (a
// std::runtime_error that keeps the standard what()), "loud" (one that
// overrides what()) or "plain" (a std::exception that keeps its what()).
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>

namespace inventory {

struct StockError {
    int code;
};

class ConfigError : public std::runtime_error {
public:
    explicit ConfigError(const std::string &what) : std::runtime_error(what) {}
};

class LoudError : public std::runtime_error {
public:
    explicit LoudError(const std::string &what) : std::runtime_error(what) {}
    const char *what() const noexcept override { return "LOUD: read nothing"; }
};

class PlainError : public std::exception {
public:
    explicit PlainError(const char *detail) : detail_(detail) {}
    const char *detail_;
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

void parse_settings(const char *path)
{
    throw ConfigError(std::string("bad setting in ") + path); // thrown with "config"
}

void shout(const char *path)
{
    throw LoudError(std::string("quiet text in ") + path); // thrown with "loud"
}

void complain(const char *path)
{
    throw PlainError(path); // thrown with "plain"
}

} // namespace inventory

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (std::strcmp(mode, "own") == 0)
        inventory::reserve(argc);
    if (std::strcmp(mode, "config") == 0)
        inventory::parse_settings("/etc/inventory.toml");
    if (std::strcmp(mode, "loud") == 0)
        inventory::shout("/etc/inventory.toml");
    if (std::strcmp(mode, "plain") == 0)
        inventory::complain("/etc/inventory.toml");
    inventory::load_config("/etc/inventory.toml");
    return 0;
}
