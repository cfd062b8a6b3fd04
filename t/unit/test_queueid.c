#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "queueid.h"

static void test_new_is_valid_and_unique(void **state)
{
	(void)state;
	char a[MXF_QID_SIZE], b[MXF_QID_SIZE];
	assert_int_equal(mxf_qid_new(a), 0);
	assert_int_equal(mxf_qid_new(b), 0);
	assert_int_equal(strlen(a), MXF_QID_LEN);
	assert_true(mxf_qid_valid(a));
	assert_true(mxf_qid_valid(b));
	assert_string_not_equal(a, b);
}

static void test_sortable_and_time(void **state)
{
	(void)state;
	uint8_t r1[10], r2[10];
	memset(r1, 0xff, sizeof(r1));
	memset(r2, 0x00, sizeof(r2));
	char a[MXF_QID_SIZE], b[MXF_QID_SIZE];
	mxf_qid_make(a, 1700000000000ULL, r1);
	mxf_qid_make(b, 1700000000001ULL, r2);
	assert_true(strcmp(a, b) < 0); /* later time sorts later whatever the random part */
	assert_int_equal(mxf_qid_time_ms(a), 1700000000000ULL);
	assert_int_equal(mxf_qid_time_ms(b), 1700000000001ULL);
	/* the maximum value is still valid */
	mxf_qid_make(a, (1ULL << 48) - 1, r1);
	assert_true(mxf_qid_valid(a));
	assert_int_equal(a[0], '7');
}

static void test_validator(void **state)
{
	(void)state;
	char a[MXF_QID_SIZE];
	assert_int_equal(mxf_qid_new(a), 0);
	char bad[64];
	assert_false(mxf_qid_valid(NULL));
	assert_false(mxf_qid_valid(""));
	strcpy(bad, a);
	bad[MXF_QID_LEN - 1] = '\0';
	assert_false(mxf_qid_valid(bad)); /* short */
	strcpy(bad, a);
	strcat(bad, "0");
	assert_false(mxf_qid_valid(bad)); /* long */
	strcpy(bad, a);
	bad[5] = 'U'; /* not in Crockford's alphabet */
	assert_false(mxf_qid_valid(bad));
	strcpy(bad, a);
	bad[5] = 'a'; /* lower case */
	assert_false(mxf_qid_valid(bad));
	strcpy(bad, a);
	bad[3] = '/';
	assert_false(mxf_qid_valid(bad));
	strcpy(bad, a);
	bad[0] = '8'; /* would need 131 bits */
	assert_false(mxf_qid_valid(bad));
	assert_false(mxf_qid_valid("../../../../../etc/passwd0"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_is_valid_and_unique),
		cmocka_unit_test(test_sortable_and_time),
		cmocka_unit_test(test_validator),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
