/* scripts/cppcheck.h - what cppcheck (make lint) is told before each file:
 * the macros of system headers it does not read, as those headers define
 * them. */
#define cJSON_ArrayForEach(element, array) \
	for (element = (array != NULL) ? (array)->child : NULL; element != NULL; \
	     element = element->next)
