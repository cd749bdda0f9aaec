#define _GNU_SOURCE  // pthread_setname_np
#include <pthread.h>
#include "CurlShim.h"

CURLcode gh_easy_setopt_long(CURL *handle, CURLoption option, long value) { return curl_easy_setopt(handle, option, value); }
CURLcode gh_easy_setopt_string(CURL *handle, CURLoption option, const char *value) { return curl_easy_setopt(handle, option, value); }
CURLcode gh_easy_setopt_pointer(CURL *handle, CURLoption option, void *value) { return curl_easy_setopt(handle, option, value); }
CURLcode gh_easy_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) { return curl_easy_setopt(handle, option, value); }
CURLcode gh_easy_setopt_write_function(CURL *handle, gh_data_callback callback) { return curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, callback); }
CURLcode gh_easy_setopt_header_function(CURL *handle, gh_data_callback callback) { return curl_easy_setopt(handle, CURLOPT_HEADERFUNCTION, callback); }
CURLcode gh_easy_getinfo_long(CURL *handle, CURLINFO info, long *value) { return curl_easy_getinfo(handle, info, value); }
CURLMcode gh_multi_setopt_long(CURLM *multi, CURLMoption option, long value) { return curl_multi_setopt(multi, option, value); }
CURLcode gh_easy_getinfo_pointer(CURL *handle, CURLINFO info, void **value) { return curl_easy_getinfo(handle, info, value); }
CURLcode gh_msg_result(const CURLMsg *message) { return message->data.result; }
int gh_msg_is_done(const CURLMsg *message) { return message->msg == CURLMSG_DONE; }

// Names the calling thread (the curl thread) for the system's tools; Swift cannot see
// pthread_setname_np, a GNU extension.
int gh_name_this_thread(const char *name) { return pthread_setname_np(pthread_self(), name); }
