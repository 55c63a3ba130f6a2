// layout.cc: the checks of layout.c, compiled as C++. A C++ module sees the
// header through extern "C" and C++'s stricter type rules; the layout, the
// constants and the sanity-check macro must come out exactly the same, and
// decltype lets the type checks be exact (C99 can only compare sizes).
#include "layout.c"
