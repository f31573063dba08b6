/* One variant of the value scanner; jscan.h includes this file once per variant, with CCO_V(name) naming its
 * functions and CCO_V(string_end)(p, i, n, ends, e) defined before. No include guard on purpose.
 *
 * A state machine over the grammar (value, member, after a value), so that the kind of the open container is
 * known from where the code is and the stack is read only when one closes. p[n] must be readable and 0 (a bytes
 * object's buffer is): the NUL matches no token, so whitespace runs and token checks need no bounds test. */

static Py_ssize_t CCO_V(value_end)(const unsigned char *p, Py_ssize_t i, Py_ssize_t n, const uint64_t *ends,
                                   CcoError *e)
{
    unsigned char stack[CCO_MAX_DEPTH];  /* the closing byte of each open container */
    int depth = 0;
    unsigned char c;
    Py_ssize_t start;

value:  /* a value starts at p[i] */
    c = p[i];
    if (CCO_LIKELY(c == '"')) {
        i = CCO_V(string_end)(p, i + 1, n, ends, e);
        if (i < 0) {
            return -1;
        }
    } else if (CCO_LIKELY(c == '{' || c == '[')) {
        if (CCO_UNLIKELY(depth >= CCO_MAX_DEPTH)) {
            CCO_FAIL(e, CCO_E_DEPTH, i);
        }
        i++;
        CCO_SKIP_WS(p, i);
        if (CCO_UNLIKELY(p[i] == c + 2)) {  /* '{' + 2 == '}', '[' + 2 == ']' */
            i++;
        } else {
            stack[depth++] = c + 2;
            if (c == '{') {
                goto member;
            }
            goto value;
        }
    } else if (c == 't') {
        if (n - i < 4 || memcmp(p + i, "true", 4) != 0) {
            CCO_FAIL(e, CCO_E_CHAR, i);
        }
        i += 4;
    } else if (c == 'f') {
        if (n - i < 5 || memcmp(p + i, "false", 5) != 0) {
            CCO_FAIL(e, CCO_E_CHAR, i);
        }
        i += 5;
    } else if (c == 'n') {
        if (n - i < 4 || memcmp(p + i, "null", 4) != 0) {
            CCO_FAIL(e, CCO_E_CHAR, i);
        }
        i += 4;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        start = i;
        i = cco_number_end(p, i, n);
        if (i < 0) {
            CCO_FAIL(e, CCO_E_NUMBER, start);
        }
    } else if (i >= n) {
        CCO_FAIL(e, CCO_E_EOF, n);
    } else {
        CCO_FAIL(e, CCO_E_CHAR, i);
    }

after_value:  /* close containers, or step to the next element */
    if (CCO_UNLIKELY(depth == 0)) {
        return i;
    }
    CCO_SKIP_WS(p, i);
    c = p[i];
    if (CCO_LIKELY(c == ',')) {
        i++;
        CCO_SKIP_WS(p, i);
        if (stack[depth - 1] == '}') {
            goto member;
        }
        goto value;
    }
    if (CCO_UNLIKELY(c != stack[depth - 1])) {
        if (i >= n) {
            CCO_FAIL(e, CCO_E_EOF, n);
        }
        CCO_FAIL(e, stack[depth - 1] == '}' ? CCO_E_COMMA_OBJECT : CCO_E_COMMA_ARRAY, i);
    }
    depth--;
    i++;
    goto after_value;

member:  /* in an object, at a member name: the name, ':' and whitespace */
    if (CCO_UNLIKELY(p[i] != '"')) {
        CCO_FAIL(e, CCO_E_NAME, i);
    }
    i = CCO_V(string_end)(p, i + 1, n, ends, e);
    if (i < 0) {
        return -1;
    }
    CCO_SKIP_WS(p, i);
    if (CCO_UNLIKELY(p[i] != ':')) {
        CCO_FAIL(e, CCO_E_COLON, i);
    }
    i++;
    CCO_SKIP_WS(p, i);
    goto value;
}
