# The C-level interface of key_c for the compiled hit lane (hit_c.pyx): scan a body's top-level members into a C
# array and key them, with no Python object per member. Only plain bodies take it (see scan_members).

cdef enum:
    MAX_MEMBERS = 64

cdef struct Member:
    Py_ssize_t name_start   # the name's bytes, inside its quotes
    Py_ssize_t name_end
    Py_ssize_t value_start  # the value's bytes
    Py_ssize_t value_end

# p is a bytes object's buffer: p[n] is its terminating NUL, which the scanner relies on (anything else is declined)
cdef int scan_members(const unsigned char* p, Py_ssize_t n, Member* out) noexcept nogil
cdef int find_member(const unsigned char* p, Member* members, int count, const char* name, Py_ssize_t length) noexcept nogil
cdef bytes members_key(bytes body, Member* members, int count, bytes context)
cdef object members_scan(bytes body, Member* members, int count)
