// Kernel A/B timer (see run.sh): old_bnk_* (another revision's kernels, renamed by objcopy)
// against bnk_* (the working tree's), alternating per run, on THREADS threads.
#include "CBatchNormKernels.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define DECL(name, ...) void old_##name(__VA_ARGS__);
DECL(bnk_contiguous_moments,int,int,const void*,ptrdiff_t,double*,double*)
DECL(bnk_contiguous_apply,int,int,int,int,const void*,const void*,void*,ptrdiff_t,float,float,float,float)
DECL(bnk_contiguous_moments_and_apply,int,int,const void*,ptrdiff_t,double*,double*,const bnk_apply_run*)
DECL(bnk_contiguous_gradient_sums,int,int,const void*,const void*,ptrdiff_t,double,double*,double*)
DECL(bnk_contiguous_gradient_sums_and_apply,int,int,const void*,const void*,ptrdiff_t,double,double*,double*,const bnk_apply_run*)
DECL(bnk_interleaved_moments,int,int,const void*,ptrdiff_t,ptrdiff_t,ptrdiff_t,ptrdiff_t,double*,double*,double*)
DECL(bnk_interleaved_gradient_sums,int,int,const void*,const void*,ptrdiff_t,ptrdiff_t,ptrdiff_t,ptrdiff_t,const double*,double*,double*,double*)
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static int level=3,type=0,kind,useold,repeat=1; static ptrdiff_t n, C=64;
typedef struct {void*x,*g,*y; double scratch[4096], mean[1024], m2[1024];} B; static B bufs[2];
#define CALL(name, ...) (useold ? old_##name(__VA_ARGS__) : name(__VA_ARGS__))
static void* work(void*arg){ B*b=arg; double mean,m2,sg,sgx; int st=1;
  bnk_apply_run run={kind==2?0:2,st,b->g,b->x,b->y,n,1.f,2.f,0.5f,0.1f};
  ptrdiff_t P = C; while (P % 16) P += C;   // lcm(C, 16), the channels-last period
  for(int q=0;q<repeat;q++) switch(kind){
   case 0: CALL(bnk_contiguous_moments,level,type,b->x,n,&mean,&m2);break;
   case 1: CALL(bnk_contiguous_apply,level,type,0,st,NULL,b->x,b->y,n,1.f,2.f,.5f,.1f);break;
   case 2: CALL(bnk_contiguous_moments_and_apply,level,type,b->x,n,&mean,&m2,&run);break;
   case 3: CALL(bnk_contiguous_gradient_sums,level,type,b->g,b->x,n,0.3,&sg,&sgx);break;
   case 4: CALL(bnk_contiguous_gradient_sums_and_apply,level,type,b->g,b->x,n,0.3,&sg,&sgx,&run);break;
   case 5: CALL(bnk_interleaved_moments,level,type,b->x,n/C,C,P,P,b->scratch,b->mean,b->m2);break;
   case 6: for(int c=0;c<C;c++) b->mean[c]=0.3; CALL(bnk_interleaved_gradient_sums,level,type,b->g,b->x,n/C,C,P,P,b->mean,b->scratch,b->mean+C,b->m2);break;
  }
  return NULL;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){ n=atol(argv[1]); type=argc>2?atoi(argv[2]):0; int R=argc>3?atoi(argv[3]):15; if(R<1||R>64) R=15; int T=argc>4?atoi(argv[4]):2; if(argc>5) C=atol(argv[5]); if(argc>6) level=atoi(argv[6]); if(argc>7) repeat=atoi(argv[7]); if(repeat<1) repeat=1;
  size_t es=type?2:4;
  for(int t=0;t<2;t++){ bufs[t].x=aligned_alloc(64,n*es);bufs[t].g=aligned_alloc(64,n*es);bufs[t].y=aligned_alloc(64,n*es);
   for(ptrdiff_t i=0;i<n*(ptrdiff_t)es/2;i++){((unsigned short*)bufs[t].x)[i]=0x3c00+(i%97);((unsigned short*)bufs[t].g)[i]=0x3c00+(i%89);((unsigned short*)bufs[t].y)[i]=0;}}
  const char*names[]={"moments","apply_fwd","moments+apply","gsums","gsums+apply","il_moments","il_gsums"};
  for(kind=0;kind<7;kind++){ double ts[2][64];
   for(int r=0;r<R;r++) for(int v=0;v<2;v++){ useold=v==0; pthread_t th[2]; double t0=now();
    for(int t=0;t<T;t++) pthread_create(&th[t],NULL,work,&bufs[t]);
    for(int t=0;t<T;t++) pthread_join(th[t],NULL); ts[v][r]=(now()-t0)/n/repeat*1e9; }
   double ratios[64]; for(int r=0;r<R;r++) ratios[r]=ts[0][r]/ts[1][r];
   qsort(ts[0],R,8,cmp); qsort(ts[1],R,8,cmp); qsort(ratios,R,8,cmp);
   printf("%-14s old %.4f  new %.4f  ns/value  median of per-rep ratios %.2f (q1 %.2f q3 %.2f)\n",names[kind],ts[0][R/2],ts[1][R/2],ratios[R/2],ratios[R/4],ratios[3*R/4]);}
}
