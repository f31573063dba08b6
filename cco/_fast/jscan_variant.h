/* One variant of the value scanner; jscan.h includes this file once per variant, with CCO_V(name) naming its
 * functions, CCO_V_TARGET its function attributes (a target ISA, or nothing) and CCO_V(string_end)(p, i, n, ends,
 * e, word) defined before. No include guard on purpose.
 *
 * A state machine over the grammar, so that the kind of the open container is known from where the code is and
 * the stack is read only when one closes: `member` and `object_next` run inside an object, `element` and
 * `array_next` inside an array, `value` anywhere (it finds its way back through `after_value`). Each state first
 * tests for the byte compact JSON has there (a string after ':', ',' or '"' after a value) and steps over
 * whitespace only when that fails, so an SDK's body costs one compare per token. p[n] must be readable and 0 (a
 * bytes object's buffer is): the NUL matches no token, so whitespace runs and token checks need no bounds test. */

CCO_V_TARGET static Py_ssize_t CCO_V(value_end)(const unsigned char *p, Py_ssize_t i, Py_ssize_t n,
                                                const uint64_t *ends, CcoError *e)
{
    unsigned char stack[CCO_MAX_DEPTH];  /* the closing byte of each open container */
    int depth = 0;
    unsigned char c;
    Py_ssize_t start;
    CcoWord word = {-1, 0};  /* the string-end map's word in hand (the map variant's) */

value:  /* a value starts at p[i] */
    c = p[i];
    if (CCO_LIKELY(c == '"')) {
        i = CCO_V(string_end)(p, i + 1, n, ends, e, &word);
        if (CCO_UNLIKELY(i < 0)) {
            return -1;
        }
    } else if (CCO_LIKELY(c == '{' || c == '[')) {
        goto open;
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

after_value:  /* a value ended at i: back to its container, if any */
    if (CCO_UNLIKELY(depth == 0)) {
        return i;
    }
    if (stack[depth - 1] == '}') {
        goto object_next;
    }
    goto array_next;

open:  /* p[i] is c, '{' or '[' */
    if (CCO_UNLIKELY(depth >= CCO_MAX_DEPTH)) {
        CCO_FAIL(e, CCO_E_DEPTH, i);
    }
    i++;
    CCO_SKIP_WS(p, i);
    if (CCO_UNLIKELY(p[i] == c + 2)) {  /* '{' + 2 == '}', '[' + 2 == ']' */
        i++;
        goto after_value;
    }
    stack[depth++] = c + 2;
    if (c == '[') {
        goto element;
    }
    /* fall through: an object's first member */

member:  /* in an object, at a member name (or whitespace before it): the name, ':' and the value */
    if (CCO_UNLIKELY(p[i] != '"')) {
        CCO_SKIP_WS(p, i);
        if (p[i] != '"') {
            CCO_FAIL(e, CCO_E_NAME, i);
        }
    }
    i = CCO_V(string_end)(p, i + 1, n, ends, e, &word);
    if (CCO_UNLIKELY(i < 0)) {
        return -1;
    }
    if (CCO_UNLIKELY(p[i] != ':')) {
        CCO_SKIP_WS(p, i);
        if (p[i] != ':') {
            CCO_FAIL(e, CCO_E_COLON, i);
        }
    }
    i++;
    c = p[i];
    if (CCO_LIKELY(c == '"')) {
        i = CCO_V(string_end)(p, i + 1, n, ends, e, &word);
        if (CCO_UNLIKELY(i < 0)) {
            return -1;
        }
        goto object_next;
    }
    if (c == '{' || c == '[') {
        goto open;
    }
    CCO_SKIP_WS(p, i);
    goto value;

object_next:  /* after a member's value: ',' and the next member, or the object's end */
    c = p[i];
    if (CCO_UNLIKELY(c != ',' && c != '}')) {
        CCO_SKIP_WS(p, i);
        c = p[i];
    }
    if (CCO_LIKELY(c == ',')) {
        i++;
        goto member;
    }
    if (c == '}') {
        depth--;
        i++;
        goto after_value;
    }
    if (i >= n) {
        CCO_FAIL(e, CCO_E_EOF, n);
    }
    CCO_FAIL(e, CCO_E_COMMA_OBJECT, i);

element:  /* in an array, at an element (or whitespace before it) */
    c = p[i];
    if (CCO_LIKELY(c == '"')) {
        i = CCO_V(string_end)(p, i + 1, n, ends, e, &word);
        if (CCO_UNLIKELY(i < 0)) {
            return -1;
        }
        goto array_next;
    }
    if (c == '{' || c == '[') {
        goto open;
    }
    CCO_SKIP_WS(p, i);
    goto value;

array_next:  /* after an element: ',' and the next element, or the array's end */
    c = p[i];
    if (CCO_UNLIKELY(c != ',' && c != ']')) {
        CCO_SKIP_WS(p, i);
        c = p[i];
    }
    if (CCO_LIKELY(c == ',')) {
        i++;
        goto element;
    }
    if (c == ']') {
        depth--;
        i++;
        goto after_value;
    }
    if (i >= n) {
        CCO_FAIL(e, CCO_E_EOF, n);
    }
    CCO_FAIL(e, CCO_E_COMMA_ARRAY, i);
}
