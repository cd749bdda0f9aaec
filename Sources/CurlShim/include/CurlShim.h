#ifndef GATEHOUSE_CURL_SHIM_H
#define GATEHOUSE_CURL_SHIM_H
#include <curl/curl.h>

/* curl_easy_setopt and friends are variadic, which Swift cannot call: these typed wrappers
   are the whole reason this target exists. */
typedef size_t (*gh_data_callback)(char *ptr, size_t size, size_t nmemb, void *userdata);

CURLcode gh_easy_setopt_long(CURL *handle, CURLoption option, long value);
CURLcode gh_easy_setopt_string(CURL *handle, CURLoption option, const char *value);
CURLcode gh_easy_setopt_pointer(CURL *handle, CURLoption option, void *value);
CURLcode gh_easy_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value);
CURLcode gh_easy_setopt_write_function(CURL *handle, gh_data_callback callback);
CURLcode gh_easy_setopt_header_function(CURL *handle, gh_data_callback callback);
CURLcode gh_easy_getinfo_long(CURL *handle, CURLINFO info, long *value);
CURLMcode gh_multi_setopt_long(CURLM *multi, CURLMoption option, long value);

#endif

#ifndef GATEHOUSE_CURL_SHIM_MULTI_H
#define GATEHOUSE_CURL_SHIM_MULTI_H
CURLcode gh_easy_getinfo_pointer(CURL *handle, CURLINFO info, void **value);
/* CURLMsg keeps its result in an anonymous union; read it here rather than guess its layout. */
CURLcode gh_msg_result(const CURLMsg *message);
int gh_msg_is_done(const CURLMsg *message);
/// Names the calling thread (at most 15 bytes), as `top -H` and /proc show it.
int gh_name_this_thread(const char *name);
#endif
